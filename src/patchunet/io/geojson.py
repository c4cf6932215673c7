"""Nuclei as GeoJSON, as QuPath reads and writes them: instance maps out, label maps back in.

Coordinates are 0-based pixel corners, QuPath's convention: pixel (row r, col c) covers the square
[c, c+1) x [r, r+1), so its centre is (c + 0.5, r + 0.5), and a pixel belongs to a polygon when its
centre lies inside. The MoNuSeg XML (`io.annotations`) is 1-based instead, from MATLAB's poly2mask: its
pixel (r, c) has the centre (X, Y) = (c + 1, r + 1). The same outline is thus (X - 0.5, Y - 0.5) in
GeoJSON: half a pixel up and left of the XML's numbers, not one whole pixel.

A nucleus is written as the outline of its pixels' edges (every vertex a pixel corner). No pixel
centre then lies on an edge, so any rasteriser gives back exactly its pixels (the round trip
returns the same instance map), and the area QuPath measures is the pixel count. Pixel-centre
outlines, the usual contour, run through the centres of the rim pixels: whether those come back
depends on the rasteriser's tie rule, and QuPath measures them about 9 % smaller (median area
over pixel count 0.91 on a MoNuSeg test image).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from skimage.draw import polygon as polygon_pixels

from patchunet.core.errors import DataError
from patchunet.core.files import atomic_file
from patchunet.io.annotations import MIN_POLYGON_VERTICES, RasterReport, count_nuclei
from patchunet.io.drawing import YELLOW

Ring = np.ndarray
"""(K, 2) float64 vertices as (x, y) in 0-based pixel-corner coordinates, not repeating the first."""
PolygonRings = list[Ring]
"""An exterior ring, then its holes."""
FeatureShape = list[PolygonRings]
"""The polygons of one feature: one for a Polygon, several for a MultiPolygon."""

AREA_GEOMETRIES = ("Polygon", "MultiPolygon")
OTHER_GEOMETRIES = ("Point", "MultiPoint", "LineString", "MultiLineString", "GeometryCollection")
"""Valid GeoJSON without an area to fill (QuPath's points and lines): skipped and counted."""
IN_MEMORY = "<GeoJSON>"
"""What errors name when the GeoJSON came as a dict or list rather than a file."""


def nuclei_feature_collection(
    labels: np.ndarray,
    *,
    offset: tuple[int, int] = (0, 0),
    measurements: Mapping[int, Mapping[str, Any]] | None = None,
    classification: str = "Nucleus",
) -> dict:
    """A GeoJSON FeatureCollection of the nuclei of (H, W) integer `labels`, which QuPath imports as
    detections: one Feature per id, in increasing id order.

    `offset` is the tile's level-0 origin (x, y), added to every vertex. A nucleus of several parts
    (4-connected) becomes a MultiPolygon; background enclosed by a part becomes a hole. Exterior
    rings have positive signed area in (x, y), holes negative (RFC 7946's rule, y as the second axis).
    `measurements` (e.g. `postprocess.nuclei.nucleus_table`'s rows keyed by their "nucleus") gives
    each nucleus its numbers; blanks and other non-numbers are left out, as QuPath takes only numbers.
    """
    features = []
    for nucleus, polygons in _outlines(labels, offset).items():
        geometry = (
            {"type": "Polygon", "coordinates": polygons[0]}
            if len(polygons) == 1
            else {"type": "MultiPolygon", "coordinates": polygons}
        )
        row = (measurements or {}).get(nucleus, {})
        properties = {
            "objectType": "detection",
            "classification": {"name": classification, "color": list(YELLOW)},
            "name": f"{classification} {nucleus}",
            "nucleus": nucleus,
            "measurements": {key: _number(value) for key, value in row.items() if _is_number(value)},
        }
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def _outlines(labels: np.ndarray, offset: tuple[int, int]) -> dict[int, list[list[list[list[int]]]]]:
    """By id, in increasing order, the polygons of each nucleus of `labels` as `_outline` gives
    them, moved by `offset`, as lists of [x, y] lists.

    Most nuclei are one 4-connected part without holes. Those have one ring, which `_simple_rings`
    finishes for all of them at once; the others go through `_outline`.
    """
    padded = np.pad(labels, 1)  # every nucleus is traced with background around it
    diagonal = _diagonal_contacts(padded)
    outlines: dict[int, list] = {}
    simple: list[tuple[int, tuple[int, int], np.ndarray, np.ndarray]] = []
    for index, box in enumerate(ndimage.find_objects(padded)):
        if box is None:
            continue
        nucleus = index + 1
        around = tuple(slice(s.start - 1, s.stop + 1) for s in box)
        origin = (around[1].start - 1 + offset[0], around[0].start - 1 + offset[1])
        mask = padded[around] == nucleus
        outlines[nucleus] = []  # keeps the id order
        if not diagonal[nucleus]:  # then 4- and 8-connected parts are the same
            contours = _doubled_contours(mask)
            if len(contours) == 1:  # one part, unless others lie in its holes: the area tells
                simple.append((nucleus, origin, mask, contours[0]))
                continue
        outlines[nucleus] = _outline_lists(mask, origin)
    pixels = np.bincount(padded.ravel(), minlength=diagonal.size)
    traced = _simple_rings([contour for *_, contour in simple], [origin for _, origin, _, _ in simple])
    for (nucleus, origin, mask, _), (ring, twice_area) in zip(simple, traced, strict=True):
        no_holes = abs(twice_area) == 2 * pixels[nucleus]  # else the ring encloses more than the pixels
        outlines[nucleus] = [[ring]] if no_holes else _outline_lists(mask, origin)
    return outlines


def _diagonal_contacts(padded: np.ndarray) -> np.ndarray:
    """By id, whether two pixels of the nucleus meet only at a corner (a 2x2 block holding them on
    one diagonal and other ids on the other)."""
    top_left, top_right, bottom_left, bottom_right = padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]
    down = (top_left == bottom_right) & (top_right != top_left) & (bottom_left != top_left)
    up = (top_right == bottom_left) & (top_left != top_right) & (bottom_right != top_right)
    flagged = np.zeros(int(padded.max()) + 1, bool)
    flagged[top_left[down]] = True
    flagged[top_right[up]] = True
    flagged[0] = False
    return flagged


def _doubled_contours(region: np.ndarray) -> tuple[np.ndarray, ...]:
    """OpenCV's outer contours of a bool region drawn at twice the size (see `_ring`)."""
    doubled = cv2.resize(region.view(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return contours


def _outline_lists(mask: np.ndarray, origin: tuple[int, int]) -> list[list[list[list[int]]]]:
    """`_outline`'s polygons of a nucleus's mask, moved by `origin` and as lists."""
    return [[(ring + np.array(origin)).tolist() for ring in rings] for rings in _outline(mask)]


def _simple_rings(contours: list[np.ndarray], origins: list[tuple[int, int]]) -> list[tuple[list, int]]:
    """`_ring`'s exterior ring, closed, moved by its origin and as a list, and twice its area, for
    each contour of `_doubled_contours`: the same steps on all rings at once."""
    if not contours:
        return []
    lengths = np.array([len(contour) for contour in contours])
    ring = np.repeat(np.arange(len(contours)), lengths)
    corners = (np.concatenate(contours)[:, 0, :].astype(np.int64) + 1) // 2
    corners, ring = _kept(corners, ring, np.any(corners != corners[_cyclic(ring, -1)], axis=1))
    before = corners - corners[_cyclic(ring, -1)]
    after = corners[_cyclic(ring, 1)] - corners
    corners, ring = _kept(corners, ring, before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0])
    following = corners[_cyclic(ring, 1)]
    cross = corners[:, 0] * following[:, 1] - following[:, 0] * corners[:, 1]
    twice_area = np.bincount(ring, weights=cross, minlength=len(contours)).astype(np.int64)  # exact: integers
    lengths = np.bincount(ring, minlength=len(contours))
    starts = np.cumsum(lengths) - lengths
    # closed with the first vertex again; turned (read backwards) where the area is not positive, as `_ring` does
    closed = np.repeat(np.arange(len(contours)), lengths + 1)
    step = (np.arange(closed.size) - (np.cumsum(lengths + 1) - (lengths + 1))[closed]) % lengths[closed]
    step = np.where(twice_area[closed] > 0, step, lengths[closed] - 1 - step)
    vertices = (corners[starts[closed] + step] + np.asarray(origins, np.int64)[closed]).tolist()
    ends = np.cumsum(lengths + 1).tolist()
    return [
        (vertices[end - length - 1 : end], area)
        for end, length, area in zip(ends, lengths.tolist(), twice_area.tolist(), strict=True)
    ]


def _cyclic(ring: np.ndarray, shift: int) -> np.ndarray:
    """For each vertex of rings stored one after another (`ring` its ring, rings contiguous), the
    index of the vertex `shift` (1 or -1) along its ring, wrapping around."""
    lengths = np.bincount(ring)
    starts = (np.cumsum(lengths) - lengths)[ring]
    return starts + (np.arange(ring.size) - starts + shift) % lengths[ring]


def _kept(corners: np.ndarray, ring: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The corners where `keep`, with the ring of each."""
    return corners[keep], ring[keep]


def _outline(mask: np.ndarray) -> list[list[np.ndarray]]:
    """The pixel-edge polygons of a (h, w) bool mask with a background border: one per 4-connected
    part, its holes the 4-connected background it encloses. Rings close with their first vertex.

    4-connected on both sides, as the union of the pixel squares is: parts that meet only at a
    corner are separate polygons touching there, which keeps every ring simple (valid in QuPath's JTS).
    """
    parts, count = ndimage.label(mask)
    polygons = []
    for part in range(1, count + 1):
        inside = parts == part
        filled = ndimage.binary_fill_holes(inside)  # fills background 4-connected components
        holes, hole_count = ndimage.label(filled & ~inside)
        rings = [_ring(filled, exterior=True)]
        rings += [_ring(holes == hole, exterior=False) for hole in range(1, hole_count + 1)]
        polygons.append([np.vstack([ring, ring[:1]]) for ring in rings])
    return polygons


def _ring(region: np.ndarray, *, exterior: bool) -> np.ndarray:
    """The outline along pixel edges of a 4-connected region without holes, (K, 2) int (x, y) corners.

    OpenCV traces the border pixels of the region drawn at twice the size. Each of their centres is
    a quarter pixel from a pixel corner on both axes, and rounding to that corner gives the outline:
    its vertices, and points along its straight runs, which are dropped.
    """
    [contour] = _doubled_contours(region)
    corners = (contour[:, 0, :] + 1) // 2  # doubled pixel u has centre (u + 0.5) / 2: nearest corner
    corners = corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]
    before, after = corners - np.roll(corners, 1, axis=0), np.roll(corners, -1, axis=0) - corners
    corners = corners[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]]  # corners only, no straight runs
    if (_signed_area(corners) > 0) != exterior:
        corners = corners[::-1]
    return corners


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: numbers.Real) -> int | float:
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def write_geojson(path: Path, collection: dict | list) -> None:
    """Write GeoJSON atomically, compact (a tile holds thousands of vertices); NaN is refused, as
    JSON has none."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(collection, allow_nan=False, separators=(",", ":")) + "\n")


@contextlib.contextmanager
def feature_collection_file(path: Path) -> Iterator[Callable[[dict], None]]:
    """A FeatureCollection written feature by feature, compact, atomically: yields a function that
    appends one feature; the file replaces `path` only if the block succeeds. For collections too
    large to hold in memory (a slide's nuclei)."""
    with atomic_file(path) as tmp, tmp.open("w") as f:
        f.write('{"type":"FeatureCollection","features":[')
        separator = ""

        def add(feature: dict) -> None:
            nonlocal separator
            f.write(separator + json.dumps(feature, allow_nan=False, separators=(",", ":")))
            separator = ","

        yield add
        f.write("]}\n")


@dataclasses.dataclass(frozen=True)
class GeoJSONReport(RasterReport):
    """`RasterReport` of a GeoJSON: `polygons` counts the features with a Polygon or MultiPolygon."""

    skipped: int
    """Features with another geometry (a point, a line) or none: nothing to fill, left out."""
    self_intersecting: int
    """Features with a ring whose edges cross (a figure eight, `ring_crosses_itself`): left out, as no
    rule tells one nucleus in two lobes from two nuclei traced in one stroke. Rings that only touch
    themselves are filled, not counted here."""


def read_geojson_polygons(source: Path | dict | list) -> list[FeatureShape]:
    """The Polygon and MultiPolygon features of a GeoJSON file (or its parsed content), in file order.

    Takes a FeatureCollection, a list of Features or a single Feature, as QuPath writes each; other
    geometries are left out (`rasterize_geojson` counts them). Bad input raises `DataError`.
    """
    return [shape for shape in _read_features(source) if shape is not None]


def rasterize_geojson(
    source: Path | dict | list, shape: tuple[int, int], *, offset: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, GeoJSONReport]:
    """Fill each polygon feature with its own id; returns (H, W) uint16/uint32 labels and a report.

    `offset` is the tile's level-0 origin (x, y), subtracted from every vertex. Pixel (r, c) belongs
    to a feature when its centre (c + 0.5, r + 0.5) lies inside one of its polygons and outside
    that polygon's holes; whatever lies beyond the image is clipped. As with the XML: ids are 1..N
    over the features with at least one exterior ring of 3 vertices or more (the others are
    degenerate), in file order, and later features win overlaps. A feature with a ring whose edges
    cross is left out and counted (`ring_crosses_itself`); one that only touches itself is filled.
    """
    features = _read_features(source)
    shapes = [feature for feature in features if feature is not None]
    with_area = [kept for kept in map(_with_area, shapes) if kept]
    valid = [polygons for polygons in with_area if not any(map(ring_crosses_itself, _rings(polygons)))]
    labels = np.zeros(shape, dtype=np.promote_types(np.min_scalar_type(len(valid)), np.uint16))
    overlap_pixels = 0
    for nucleus_id, polygons in enumerate(valid, start=1):
        pixels = np.unique(np.concatenate([_polygon_pixels(rings, shape, offset) for rings in polygons]))
        overlap_pixels += int(np.count_nonzero(labels.flat[pixels]))
        labels.flat[pixels] = nucleus_id
    report = GeoJSONReport(
        polygons=len(shapes),
        degenerate=len(shapes) - len(with_area),
        overlap_pixels=overlap_pixels,
        nuclei=count_nuclei(labels),
        skipped=len(features) - len(shapes),
        self_intersecting=len(with_area) - len(valid),
    )
    return labels, report


def _with_area(polygons: FeatureShape) -> FeatureShape:
    """The polygons whose exterior ring has at least 3 vertices, without their holes that have fewer."""
    return [
        [rings[0], *(hole for hole in rings[1:] if len(hole) >= MIN_POLYGON_VERTICES)]
        for rings in polygons
        if len(rings[0]) >= MIN_POLYGON_VERTICES
    ]


def _rings(polygons: FeatureShape) -> list[Ring]:
    return [ring for rings in polygons for ring in rings]


SEGMENT_BLOCK = 512
"""Edges compared with all others at once in `ring_crosses_itself`: bounds its memory on long rings."""


def ring_crosses_itself(ring: Ring) -> bool:
    """Whether two edges of a ring that are not neighbours cross: meet at one point inside both.

    Such a ring (a figure eight, one stroke around two nuclei) is no valid polygon for JTS or
    QuPath, and filled even-odd it gives lobes that only look like one nucleus. A ring that only
    touches itself is not flagged: a vertex on another edge, or an outline pinched through one
    point twice (QuPath's brush leaves these), fills the same by even-odd and by winding, so its
    nucleus is unambiguous. Nor are collinear edges that overlap (an outline that runs back along
    itself): they enclose no area, so they change no pixel. The other cost of "only crossings
    between vertices": a figure eight whose two strokes cross exactly at a shared vertex passes too;
    filled, it is the same two lobes joined at one point as a pinch. Repeated consecutive vertices
    are dropped first; they add no edge.
    """
    ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)] if len(ring) > 1 else ring
    count = len(ring)
    if count < 4:  # a triangle's edges are all neighbours
        return False
    starts, ends = ring, np.roll(ring, -1, axis=0)
    index = np.arange(count)
    for first in range(0, count, SEGMENT_BLOCK):
        rows = index[first : first + SEGMENT_BLOCK, None]
        gap = (index[None, :] - rows) % count
        compared = (gap > 1) & (gap < count - 1) & (index[None, :] > rows)  # each pair once, no neighbours
        cross = _segments_cross(starts[rows[:, 0]], ends[rows[:, 0]], starts, ends)
        if np.any(cross & compared):
            return True
    return False


def _segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(n, m) whether segments a[i]b[i] and c[j]d[j] cross properly; a, b (n, 2), c, d (m, 2).

    Proper: c and d lie strictly on opposite sides of ab's line, and a and b of cd's, so the one
    common point is inside both segments. An end on the other segment, or collinear overlap, is not.
    """

    def orientation(p, q, r):  # the sign of the cross product (q - p) x (r - p)
        (px, py), (qx, qy), (rx, ry) = np.moveaxis(p, -1, 0), np.moveaxis(q, -1, 0), np.moveaxis(r, -1, 0)
        return np.sign((qx - px) * (ry - py) - (qy - py) * (rx - px))

    a, b, c, d = a[:, None, :], b[:, None, :], c[None, :, :], d[None, :, :]
    o1, o2, o3, o4 = orientation(a, b, c), orientation(a, b, d), orientation(c, d, a), orientation(c, d, b)
    return (o1 * o2 < 0) & (o3 * o4 < 0)


def _polygon_pixels(rings: PolygonRings, shape: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
    """Flat indices of the pixels whose centre is inside the exterior ring and outside every hole."""

    def inside(ring: Ring) -> np.ndarray:
        # the pixel centre (c + 0.5, r + 0.5) is skimage's point (r, c): shift the vertices by half a pixel
        rows, cols = polygon_pixels(ring[:, 1] - offset[1] - 0.5, ring[:, 0] - offset[0] - 0.5, shape=shape)
        return np.ravel_multi_index((rows, cols), shape)

    pixels = inside(rings[0])
    for hole in rings[1:]:
        pixels = np.setdiff1d(pixels, inside(hole), assume_unique=True)
    return pixels


def _read_features(source: Path | dict | list) -> list[FeatureShape | None]:
    """Every feature's polygons, None for a feature without an area geometry."""
    name = IN_MEMORY if isinstance(source, dict | list) else source
    content = source if isinstance(source, dict | list) else _load_json(Path(source))
    if isinstance(content, dict) and content.get("type") == "FeatureCollection":
        features = content.get("features")
        if not isinstance(features, list):
            raise DataError(name, "not GeoJSON: the FeatureCollection has no list of 'features'")
    elif isinstance(content, dict) and content.get("type") == "Feature":
        features = [content]
    elif isinstance(content, list):
        features = content
    else:
        kind = content.get("type") if isinstance(content, dict) else type(content).__name__
        raise DataError(name, f"not GeoJSON: expected a FeatureCollection, a Feature or a list of them, got {kind!r}")
    return [_feature_shape(name, number, feature) for number, feature in enumerate(features, start=1)]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except UnicodeDecodeError:
        raise DataError(path, "not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None


def _feature_shape(name: Path | str, number: int, feature: object) -> FeatureShape | None:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise DataError(name, f"not GeoJSON: item {number} is not a Feature")
    geometry = feature.get("geometry")
    if geometry is None:
        return None
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if kind in OTHER_GEOMETRIES:
        return None
    if kind not in AREA_GEOMETRIES:
        raise DataError(name, f"not GeoJSON: feature {number} has no valid geometry type ({kind!r})")
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if kind == "Polygon" else coordinates
    if not isinstance(polygons, list) or not all(isinstance(rings, list) and rings for rings in polygons):
        raise DataError(name, f"feature {number}: {kind} coordinates are not lists of rings")
    return [[_ring_vertices(name, number, ring) for ring in rings] for rings in polygons]


def _ring_vertices(name: Path | str, number: int, ring: object) -> Ring:
    """A ring's (x, y) vertices, without the closing repeat of the first; a z, if any, is dropped."""
    if not isinstance(ring, list) or not all(
        isinstance(position, list) and len(position) >= 2 and all(_is_number(value) for value in position[:2])
        for position in ring
    ):
        raise DataError(name, f"feature {number}: a ring's coordinates are not [x, y] pairs of finite numbers")
    vertices = np.array([position[:2] for position in ring], dtype=np.float64).reshape(-1, 2)
    if len(vertices) > 1 and np.array_equal(vertices[0], vertices[-1]):
        vertices = vertices[:-1]
    return vertices
