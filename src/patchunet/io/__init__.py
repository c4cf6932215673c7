"""I/O: images and slides, their scale, nucleus annotations (XML, GeoJSON) and drawing, read and written."""
