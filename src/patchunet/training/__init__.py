"""Training: the loop and its callbacks, checkpoints, devices, and the builder that train and tune share."""
