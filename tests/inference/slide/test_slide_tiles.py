"""A tile's nuclei as the tile store saves them: features in the level's pixels with their rows."""

from __future__ import annotations

import numpy as np

from patchunet.inference.slide.tiles import nucleus_features
from patchunet.io.geojson import rasterize_geojson
from patchunet.postprocess.nuclei import NUCLEUS_COLUMNS


def test_a_tiles_nuclei_are_features_at_its_place_in_the_level_with_their_rows_and_boxes() -> None:
    labels = np.zeros((16, 16), np.int32)
    labels[2:6, 3:9] = 1
    labels[10:14, 10:12] = 2
    features = nucleus_features(labels, (100, 50), 0.5, image=np.full((16, 16, 3), 90, np.uint8))
    assert [feature["properties"]["nucleus"] for feature in features] == [1, 2]
    first, row = features[0], features[0]["row"]
    assert list(row) == list(NUCLEUS_COLUMNS)
    assert first["bbox"] == [103, 52, 109, 56]
    assert (row["centroid_x"], row["centroid_y"]) == (105.5, 53.5)
    assert (row["area_um2"], row["mean_intensity"], row["mean_probability"]) == (6.0, 90.0, "")
    level = rasterize_geojson(features, (66, 116))[0]
    assert np.array_equal(level[50:66, 100:116] > 0, labels > 0)
