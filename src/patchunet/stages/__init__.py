"""Stages layer: each DVC stage as a library function, `patchunet.stages.<stage>.run(params, root)`.

`params` is the loaded params.yaml mapping and `root` the project folder (that of dvc.yaml): a
stage reads and writes under `root`, never the working folder, and returns a summary of what it
wrote. Like the entry points above them, stages print their progress lines; `pipelines/<stage>.py`
parses a stage's options and calls its `run`, and tests and benchmarks call it in process.
"""
