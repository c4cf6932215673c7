"""Post-processing: nucleus instances from the network's maps, the one tile grid, and stitching tiles back together."""
