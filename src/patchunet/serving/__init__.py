"""Serving: the nuclei model MLflow loads and serves, its requests, the model cards, and `patchunet serve`."""
