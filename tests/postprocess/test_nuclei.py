"""The nucleus table: its columns, what each measures, and a slide level's rows in level-0 pixels."""

from __future__ import annotations

import numpy as np
import pytest

from patchunet.postprocess.nuclei import NUCLEUS_COLUMNS, NUCLEUS_TABLE, in_finer_pixels, moved, nucleus_table


def two_nuclei() -> np.ndarray:
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 3:11] = 1  # 4 x 8: centroid (x 6.5, y 3.5)
    labels[10:15, 20:25] = 2  # 5 x 5
    return labels


def test_every_row_has_the_tables_columns_in_order() -> None:
    rows = nucleus_table(two_nuclei(), 0.25, np.full((20, 30), 0.5, np.float32), np.zeros((20, 30, 3), np.uint8))
    assert [list(row) for row in rows] == [list(NUCLEUS_COLUMNS)] * 2
    assert len(set(NUCLEUS_COLUMNS)) == len(NUCLEUS_TABLE)


def test_a_row_measures_its_nucleus_in_pixels_and_microns() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    image[two_nuclei() == 1] = 100
    probabilities = np.where(two_nuclei() == 1, 0.8, 0.2).astype(np.float32)
    first = nucleus_table(two_nuclei(), 0.5, probabilities, image)[0]
    assert (first["nucleus"], first["centroid_x"], first["centroid_y"]) == (1, 6.5, 3.5)
    assert (first["bbox_min_x"], first["bbox_min_y"], first["bbox_max_x"], first["bbox_max_y"]) == (3, 2, 11, 6)
    assert (first["area_px"], first["area_um2"]) == (32, 8.0)
    assert first["perimeter_um"] == pytest.approx(first["perimeter_px"] * 0.5, abs=1e-3)
    assert 0 < first["eccentricity"] < 1
    assert (first["mean_intensity"], first["mean_probability"]) == (100.0, 0.8)


def test_what_cannot_be_measured_is_blank() -> None:
    first = nucleus_table(two_nuclei())[0]
    blank = [name for name, value in first.items() if value == ""]
    assert blank == ["area_um2", "perimeter_um", "mean_intensity", "mean_probability"]


def test_a_levels_row_in_level_0_pixels_scales_pixels_and_keeps_microns() -> None:
    row = moved(nucleus_table(two_nuclei(), 0.5)[1], (100, 40))
    assert (row["centroid_x"], row["bbox_min_x"], row["bbox_max_y"]) == (122.0, 120, 55)
    finer = in_finer_pixels(row, 2.0)
    assert (finer["centroid_x"], finer["centroid_y"]) == (244.0, 2 * row["centroid_y"])
    assert (finer["bbox_min_x"], finer["bbox_min_y"], finer["bbox_max_x"], finer["bbox_max_y"]) == (240, 100, 250, 110)
    assert (finer["area_px"], finer["perimeter_px"]) == (100, round(2 * row["perimeter_px"], 2))
    assert (finer["area_um2"], finer["perimeter_um"]) == (row["area_um2"], row["perimeter_um"])
