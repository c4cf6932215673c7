"""Stage `source`: data/source.json, what identifies the MoNuSeg source that `fetch` reads.

The source (`source`, else MONUSEG_DIR, else data.source, else the official download) lies outside
the repo, where DVC cannot see it. The list holds the source's files with their sizes and SHA-256,
not its path; `fetch` depends on it. So fetch reruns exactly when the data changes (another source,
an edited file), and not when the same files are reached through another path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from patchunet.core.config import DataConfig, parse_section
from patchunet.core.files import write_json
from patchunet.core.paths import SOURCE_MANIFEST
from patchunet.data.sources import chosen_source, source_manifest


@dataclasses.dataclass(frozen=True)
class SourceSummary:
    manifest_file: Path
    source: Path | None
    """The source listed; None: the official download."""
    files: int
    """How many files the source holds (0 for the download)."""


def run(params: dict, root: Path, *, source: str | None = None, out: Path | None = None) -> SourceSummary:
    """List the source's files in `out` (default root/data/source.json)."""
    cfg = parse_section(DataConfig, params, "data")
    chosen = chosen_source(source, cfg)
    out = root / SOURCE_MANIFEST if out is None else out

    manifest = source_manifest(chosen, cfg)
    write_json(out, manifest)
    files = manifest.get("files", [])
    if chosen is None:
        print("source: none given; fetch downloads the official zips")
    else:
        megabytes = sum(f["size"] for f in files) / 1e6
        print(f"source: {chosen}: {len(files)} files, {megabytes:.0f} MB")
    print(f"source: wrote {out}")
    return SourceSummary(out, chosen, len(files))
