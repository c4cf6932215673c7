"""DVC stage `source`: data/source.json, what identifies the MoNuSeg source that `fetch` reads.

The source (--source, else MONUSEG_DIR, else data.source, else the official download) lies outside
the repo, where DVC cannot see it. This stage runs at every `dvc repro` (always_changed) and lists
the source's files with their sizes and SHA-256, not its path; `fetch` depends on the list. So fetch
reruns exactly when the data changes (another source, an edited file), and not when the same files
are reached through another path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet.core.config import DataConfig, load_params, parse_section
from patchunet.core.console import run_stage
from patchunet.core.files import write_json
from patchunet.core.paths import SOURCE_MANIFEST
from patchunet.data.sources import chosen_source, source_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--source", help="unzipped MoNuSeg folder, a folder holding the official zips, or your own images' folder"
    )
    parser.add_argument("--out", type=Path, default=SOURCE_MANIFEST)
    args = parser.parse_args()
    cfg = parse_section(DataConfig, load_params(args.params), "data")
    source = chosen_source(args.source, cfg)

    manifest = source_manifest(source, cfg)
    write_json(args.out, manifest)
    if source is None:
        print("source: none given; fetch downloads the official zips")
    else:
        files = manifest["files"]
        megabytes = sum(f["size"] for f in files) / 1e6
        print(f"source: {source}: {len(files)} files, {megabytes:.0f} MB")
    print(f"source: wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
