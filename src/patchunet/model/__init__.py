"""Model: the network, PatchUNet, with its instance heads and its losses."""
