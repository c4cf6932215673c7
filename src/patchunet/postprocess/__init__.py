"""Post-processing: nucleus instances from the network's maps, the nucleus table, the one tile grid,
and stitching tiles back together."""
