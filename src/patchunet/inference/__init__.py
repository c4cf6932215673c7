"""Inference: runtimes, sliding windows, nuclei and their table, `patchunet predict` and `predict-slide`."""
