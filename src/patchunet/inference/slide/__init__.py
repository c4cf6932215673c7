"""Whole slides, tile by tile: the tile plan over the tissue, a tile's nuclei, the resumable tile
store and the writers of a slide's outputs; `inference.predict_slide` runs them in order."""
