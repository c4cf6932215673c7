"""A slide's label image from its finished tiles: the GeoJSON's ids over the level read, pyramidal."""

from __future__ import annotations

import csv
import re
import weakref
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.draw import disk
from skimage.segmentation import relabel_sequential

from patchunet.inference.slide.label_image import label_tiles, write_label_image
from patchunet.inference.slide.plan import TilePlan
from patchunet.inference.slide.tile_store import TileLabels, TileStore
from patchunet.inference.slide.tiles import nucleus_features
from patchunet.inference.slide.writers import write_slide_outputs
from patchunet.io.geojson import rasterize_geojson
from patchunet.postprocess.tiling import Tile, tile_grid

HEIGHT, WIDTH, TILE, MARGIN = 1300, 1700, 400, 40
LEVEL_MPP = 0.5


def scattered_nuclei() -> np.ndarray:
    """(HEIGHT, WIDTH) int32 labels: disks of radius up to 12 px, some with a hole, none touching."""
    rng = np.random.default_rng(0)
    labels = np.zeros((HEIGHT, WIDTH), np.int32)
    for _ in range(900):
        y, x, radius = rng.integers(15, HEIGHT - 15), rng.integers(15, WIDTH - 15), rng.integers(2, 13)
        rows, cols = disk((y, x), radius + 2, shape=labels.shape)
        if labels[rows, cols].any():
            continue
        rows, cols = disk((y, x), radius, shape=labels.shape)
        labels[rows, cols] = labels.max() + 1
        if radius > 8:
            labels[y - 2 : y + 2, x - 2 : x + 2] = 0
    return labels


def plan(tiles: list[Tile]) -> TilePlan:
    tissue = np.ones((HEIGHT // 4, WIDTH // 4), bool)
    thumbnail = np.zeros((*tissue.shape, 3), np.uint8)
    return TilePlan(0, 1.0, LEVEL_MPP, WIDTH, HEIGHT, tiles, tiles, thumbnail, 4.0, tissue)


def finished_tiles(labels: np.ndarray, tiles: list[Tile], folder: Path) -> TileStore:
    """A tile store holding each tile with the nuclei whose centroid its core holds, as
    `stitched_tile` gives them."""
    centroids = ndimage.center_of_mass(labels > 0, labels, np.arange(1, labels.max() + 1))
    owner = {}
    for nucleus, (y, x) in enumerate(centroids, start=1):
        owner[nucleus] = (int(y) // TILE, int(x) // TILE)
    store = TileStore(folder, {"slide": "s"})
    for tile in tiles:
        x, y, width, height = tile.read_box(MARGIN, WIDTH, HEIGHT)
        crop = labels[y : y + height, x : x + width].copy()
        crop[~np.isin(crop, [n for n, key in owner.items() if key == (tile.row, tile.col)])] = 0
        store.save(tile.row, tile.col, tile_done(crop, (x, y)))
    return store


def tile_done(kept: np.ndarray, offset: tuple[int, int]) -> dict:
    """What the tile store saves of a tile that kept the nuclei of (h, w) `kept`, read at `offset` (x, y)."""
    kept = relabel_sequential(kept)[0]  # numbered in raster order, as keep_core_nuclei numbers them
    report = {"kept": int(kept.max()), "duplicates": 0, "cut": 0, "trimmed_pixels": 0}
    features = nucleus_features(kept, offset, LEVEL_MPP)
    return {"features": features, "labels": TileLabels.cropped(kept, offset), "report": report}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """(folder, the labels): a slide's label image and GeoJSON, from tiles of scattered nuclei."""
    out = tmp_path_factory.mktemp("labels")
    labels = scattered_nuclei()
    tiles = tile_grid((HEIGHT, WIDTH), TILE, TILE, clip=True)
    store = finished_tiles(labels, tiles, out / "s_tiles")
    write_label_image(out / "s_labels.ome.tif", plan(tiles), MARGIN, store)
    write_slide_outputs(out, "s", plan(tiles), store.finished(tiles))
    return out, labels


def levels(path: Path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels]


def test_level_0_holds_the_geojsons_ids_on_exactly_their_pixels(written) -> None:
    """The outlines run along pixel edges, so filled they give back the pixels: exact equality."""
    out, labels = written
    level_0 = levels(out / "s_labels.ome.tif")[0]
    assert level_0.dtype == np.uint32
    assert np.array_equal(level_0, rasterize_geojson(out / "s_nuclei.geojson", (HEIGHT, WIDTH))[0])
    assert np.array_equal(level_0 > 0, labels > 0) and len(np.unique(level_0)) == len(np.unique(labels))


def test_the_levels_halve_by_nearest_neighbour_down_to_one_tile(written) -> None:
    out, _ = written
    pyramid = levels(out / "s_labels.ome.tif")
    assert [level.shape for level in pyramid] == [(1300, 1700), (650, 850), (325, 425)]
    for index, level in enumerate(pyramid[1:], start=1):
        assert np.array_equal(level, pyramid[0][:: 2**index, :: 2**index])


def test_the_ome_xml_gives_the_level_reads_microns_per_pixel(written) -> None:
    out, _ = written
    with tifffile.TiffFile(out / "s_labels.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "YX"
        xml = tif.ome_metadata
        page = tif.series[0].levels[1].pages[0]
        assert page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert re.search(r'PhysicalSizeX="0.5" PhysicalSizeXUnit="µm" PhysicalSizeY="0.5"', xml)


def test_a_slide_without_nuclei_gives_an_empty_label_image(tmp_path: Path) -> None:
    tiles = tile_grid((HEIGHT, WIDTH), TILE, TILE, clip=True)
    store = finished_tiles(np.zeros((HEIGHT, WIDTH), np.int32), tiles, tmp_path / "s_tiles")
    write_label_image(tmp_path / "s_labels.ome.tif", plan(tiles), MARGIN, store)
    assert all(not level.any() for level in levels(tmp_path / "s_labels.ome.tif"))


def test_later_tiles_win_where_nuclei_cross_into_their_neighbours_at_every_level(tmp_path: Path) -> None:
    """Nuclei reach from one tile's core across its margin into its neighbours', and some overlap
    a later tile's: every level is the GeoJSON filled in tile order, sampled at (r, c) * 2**k,
    whatever the read boxes' offsets (margin 37, tiles of 300: not multiples of 2**k)."""
    height, width, size, margin = 1100, 1300, 300, 37
    tiles = tile_grid((height, width), size, size, clip=True)
    rng = np.random.default_rng(1)
    store = TileStore(tmp_path / "s_tiles", {"slide": "s"})
    for tile in tiles:
        x, y, box_width, box_height = tile.read_box(margin, width, height)
        kept = np.zeros((box_height, box_width), np.int32)
        for nucleus in range(1, 40):
            row, col = rng.integers(0, box_height), rng.integers(0, box_width)
            kept[max(row - 20, 0) : row + 20, max(col - 9, 0) : col + 9] = nucleus
        store.save(tile.row, tile.col, tile_done(kept, (x, y)))
    slide_plan = TilePlan(
        0, 1.0, LEVEL_MPP, width, height, tiles, tiles, np.zeros((4, 4, 3), np.uint8), 1.0, np.ones((4, 4), bool)
    )
    write_label_image(tmp_path / "s_labels.ome.tif", slide_plan, margin, store)
    write_slide_outputs(tmp_path, "s", slide_plan, store.finished(tiles))
    expected = rasterize_geojson(tmp_path / "s_nuclei.geojson", (height, width))[0]
    pyramid = levels(tmp_path / "s_labels.ome.tif")
    with (tmp_path / "s_nuclei.csv").open() as f:
        areas = [float(row["area_um2"]) / LEVEL_MPP**2 for row in csv.DictReader(f)]
    assert len(areas) > 700 and sum(areas) > (expected > 0).sum()  # some nuclei lie under later ones
    assert len(pyramid) == 3
    for level, pixels in enumerate(pyramid):
        assert np.array_equal(pixels, expected[:: 2**level, :: 2**level])


def test_each_tile_is_read_once_per_level_and_let_go_once_passed() -> None:
    """Memory holds the labels of the tiles reaching the current row of image tiles: at level 0
    with rows of image tiles shorter than a slide tile, two rows of slide tiles at most."""
    tiles = tile_grid((HEIGHT, WIDTH), TILE, TILE, clip=True)
    boxes = [tile.read_box(MARGIN, WIDTH, HEIGHT) for tile in tiles]
    reads, alive, most_alive = [], [], 0

    def read(index: int) -> TileLabels:
        x, y, width, height = boxes[index]
        labels = TileLabels(x, y, np.ones((height, width), np.uint16), 1)
        reads.append(index)
        alive.append(weakref.ref(labels))
        return labels

    for _ in label_tiles(boxes, [1] * len(tiles), list(range(len(tiles))), read, (HEIGHT, WIDTH), 1, size=128):
        most_alive = max(most_alive, sum(ref() is not None for ref in alive))
    assert sorted(reads) == list(range(len(tiles)))
    assert 0 < most_alive <= 2 * len({tile.col for tile in tiles})
