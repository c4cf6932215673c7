"""An image's instance label map, from its XML, GeoJSON or instance map, checked against the image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from patchunet.core.errors import DataError
from patchunet.data.monuseg import ImageRecord
from patchunet.evaluation.metrics import PixelCounts
from patchunet.io.annotations import VERTEX_MARGIN_PX, RasterReport, count_nuclei, rasterize_polygons, read_polygons
from patchunet.io.geojson import GeoJSONReport, rasterize_geojson, read_geojson_polygons
from patchunet.io.images import read_label_image, read_rgb_image


@dataclasses.dataclass(frozen=True)
class LabelResult:
    """An image's label map and how it was made."""

    labels: np.ndarray
    """(H, W) uint16/uint32 instance ids, the shape of the image"""
    source: str
    """'xml', 'geojson' or 'instance_map'"""
    nuclei: int
    raster: RasterReport | None
    """Set when the labels come from the XML or the GeoJSON (then a `GeoJSONReport`)."""
    xml_vs_map_iou: float | None
    """Foreground IoU of the rasterised XML against the shipped instance map, where both exist."""


def make_label_map(record: ImageRecord, prefer: str) -> LabelResult:
    """Build the label map of one image from its XML or its instance map, checked against the image.

    `prefer` ('xml' or 'instance_map') decides when an image has both; the other is the fallback.
    An image with a GeoJSON has nothing else (`pair_files`), and its labels are the GeoJSON's.
    """
    image = read_rgb_image(record.image)
    shape = image.shape[:2]
    if record.geojson is not None:
        labels, report = geojson_label_map(record.geojson, shape)
        return LabelResult(labels, "geojson", report.nuclei, report, None)
    from_xml = from_map = raster = None
    if record.xml is not None:
        polygons = read_polygons(record.xml, shape)  # every vertex checked against the image
        from_xml, raster = rasterize_polygons(polygons, shape)
        if raster.nuclei == 0:
            raise DataError(record.xml, f"no usable polygon: all {raster.polygons} regions are degenerate")
    if record.instance_map is not None:
        from_map = read_label_image(record.instance_map)
        if from_map.shape != shape:
            raise DataError(
                record.instance_map,
                f"label map is {from_map.shape[1]}x{from_map.shape[0]} but its image "
                f"{record.image.name} is {shape[1]}x{shape[0]}",
            )
        from_map = from_map.astype(np.promote_types(np.min_scalar_type(from_map.max()), np.uint16), copy=False)
    iou = PixelCounts.between(from_map > 0, from_xml > 0).iou if from_xml is not None and from_map is not None else None
    use_xml = from_xml is not None and (prefer == "xml" or from_map is None)
    labels = from_xml if use_xml else from_map
    assert labels is not None  # pair_files guarantees an XML or an instance map
    return LabelResult(labels, "xml" if use_xml else "instance_map", count_nuclei(labels), raster, iou)


def geojson_label_map(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, GeoJSONReport]:
    """(H, W) labels of a GeoJSON's polygons (`io.geojson.rasterize_geojson`: holes, multipolygons,
    clipped at the border), with the XML's checks: every vertex within VERTEX_MARGIN_PX of the image,
    and at least one polygon with an area."""
    height, width = shape
    for number, polygons in enumerate(read_geojson_polygons(path), start=1):
        vertices = np.concatenate([ring for rings in polygons for ring in rings]).reshape(-1, 2)
        # 0-based pixel corners: the image spans [0, W] x [0, H]
        beyond = np.max([-vertices[:, 0], vertices[:, 0] - width, -vertices[:, 1], vertices[:, 1] - height], axis=0)
        worst = int(np.argmax(beyond)) if len(beyond) else 0
        if len(beyond) and beyond[worst] > VERTEX_MARGIN_PX:
            x, y = vertices[worst]
            raise DataError(
                path,
                f"polygon feature {number}: vertex (x={x:g}, y={y:g}) lies {beyond[worst]:g} px outside the "
                f"{width}x{height} image (at most {VERTEX_MARGIN_PX:g} px allowed; coordinates of the whole slide?)",
            )
    labels, report = rasterize_geojson(path, shape)
    if report.nuclei == 0:
        crossing = f", {report.self_intersecting} crossing themselves" if report.self_intersecting else ""
        raise DataError(
            path,
            f"no usable polygon: {report.polygons} polygon features ({report.degenerate} degenerate{crossing}), "
            f"{report.skipped} other geometries",
        )
    return labels, report
