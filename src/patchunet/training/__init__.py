"""Training: the loop and its callbacks, whole-image val scoring, checkpoints, devices, and the builder tune shares."""
