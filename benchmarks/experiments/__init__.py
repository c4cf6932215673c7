"""The runs whose outputs chose the model; `dvc.yaml` here tracks them (`dvc repro benchmarks/experiments/dvc.yaml`)."""
