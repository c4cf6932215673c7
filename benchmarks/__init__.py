"""Scripts that measure the project, run as modules from the repository root after `dvc repro`:

    .venv/bin/python -m benchmarks.perf.inference_speed --help

- `experiments/`: the runs whose outputs chose the model, tracked by their own `dvc.yaml`;
- `perf/`: timings: throughput, speed, latency, memory;
- `checks/`: correctness on real data, against a reference computed another way;
- `tools/`: figures about the code itself, not the model.

`harness.py` is what the experiments share. The data is the pipeline's own, under `data/`
(`pipeline_images`, `patchunet.core.paths`): `dvc repro` makes it from MONUSEG_DIR or `data.source`.
"""

from __future__ import annotations

from pathlib import Path

from patchunet.core.paths import RAW_DIR, labels_dir

ROOT = Path(__file__).resolve().parents[1]
"""The project root: params.yaml, dvc.yaml and the pipeline's outputs are relative to it."""


def pipeline_images(split: str) -> list[tuple[str, Path, Path]]:
    """(id, image, instance labels) of every image of `split` ("train" or "test"), by id: the images
    `dvc repro fetch` copied and the label maps `dvc repro masks` made from their annotations."""
    images = sorted((ROOT / RAW_DIR / split / "images").glob("*.tif"))
    if not images:
        raise SystemExit(
            f"no {split} images under {ROOT / RAW_DIR}: run `dvc repro masks` (MoNuSeg from MONUSEG_DIR or data.source)"
        )
    return [(image.stem, image, ROOT / labels_dir(split) / image.name) for image in images]
