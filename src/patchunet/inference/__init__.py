"""Inference: runtimes, sliding windows, nuclei, `patchunet predict` and `predict-slide` (its parts in slide/)."""
