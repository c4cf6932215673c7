"""Stage `masks`: one instance label map per image in data/interim/<split>/labels/<id>.tif.

Labels come from the XML polygons (rasterised with the organisers' one-pixel convention), from
the GeoJSON polygons of your own images, or, where an image has neither, from its instance map.
Writes data/interim/masks_report.json with what was skipped or overwritten per image.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tqdm import tqdm

from patchunet.core.config import MasksConfig, parse_section
from patchunet.core.files import atomic_directory, write_json
from patchunet.core.paths import INTERIM_DIR, MASKS_REPORT, RAW_DIR, labels_dir
from patchunet.core.resources import worker_count
from patchunet.data.masks import LabelResult, make_label_map
from patchunet.data.monuseg import SPLITS, pair_files, raw_dirs
from patchunet.io.images import write_label_tiff


@dataclasses.dataclass(frozen=True)
class MasksSummary:
    report_file: Path
    report: dict[str, dict]
    """Per image id: its split, where its labels came from, its nuclei, what was skipped."""


def run(params: dict, root: Path) -> MasksSummary:
    """Make every label map of both splits, then write them: a bad file anywhere changes nothing."""
    cfg = parse_section(MasksConfig, params, "masks")

    records = [record for split in SPLITS for record in pair_files(raw_dirs(root / RAW_DIR), split)]
    with ProcessPoolExecutor(worker_count()) as pool:
        made = pool.map(partial(make_label_map, prefer=cfg.prefer), records)
        results = list(tqdm(made, total=len(records), desc="masks", unit="image"))
    report: dict[str, dict] = {}
    for split in SPLITS:
        with atomic_directory(root / labels_dir(split)) as staging:
            for record, result in zip(records, results, strict=True):
                if record.split == split:
                    write_label_tiff(staging / f"{record.image_id}.tif", result.labels)
                    report[record.image_id] = {"split": split, **summarise(result)}
    write_json(root / MASKS_REPORT, report)
    print_summary(report, root)
    return MasksSummary(root / MASKS_REPORT, report)


def summarise(result: LabelResult) -> dict:
    row = {"source": result.source, "nuclei": result.nuclei}
    if result.raster is not None:  # xml_* or geojson_*
        row.update({f"{result.source}_{k}": v for k, v in dataclasses.asdict(result.raster).items()})
    if result.xml_vs_map_iou is not None:
        row["xml_vs_map_iou"] = round(result.xml_vs_map_iou, 4)
    return row


def print_summary(report: dict[str, dict], root: Path) -> None:
    for split in SPLITS:
        rows = {k: v for k, v in report.items() if v["split"] == split}
        sources = Counter(v["source"] for v in rows.values())
        nuclei = sum(v["nuclei"] for v in rows.values())
        from_geojson = f"{sources['geojson']} from GeoJSON, " if sources["geojson"] else ""
        print(
            f"masks: {split}: {len(rows)} label maps ({sources['xml']} from XML, {from_geojson}"
            f"{sources['instance_map']} from instance maps), {nuclei} nuclei"
        )
    for image_id, row in report.items():
        source = row["source"]
        if row.get(f"{source}_degenerate"):
            print(f"masks: {image_id}: skipped {row[f'{source}_degenerate']} degenerate polygon(s) (under 3 vertices)")
        if row.get("geojson_self_intersecting"):
            print(
                f"masks: {image_id}: skipped {row['geojson_self_intersecting']} GeoJSON polygon(s) whose outline "
                "crosses itself (redraw them)"
            )
        if row.get("geojson_skipped"):
            print(
                f"masks: {image_id}: skipped {row['geojson_skipped']} GeoJSON feature(s) without area (points, lines)"
            )
    overlapping = {
        k: v[f"{v['source']}_overlap_pixels"] for k, v in report.items() if v.get(f"{v['source']}_overlap_pixels")
    }
    if overlapping:
        print(
            f"masks: {sum(overlapping.values())} pixels claimed by overlapping polygons in {len(overlapping)} "
            "images; the later polygon keeps them (per image in masks_report.json)"
        )
    print(f"masks: wrote {root / INTERIM_DIR}/{{{','.join(SPLITS)}}}/labels and {root / MASKS_REPORT}")
