"""The network: PatchUNet, its instance heads and its losses."""
