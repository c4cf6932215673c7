"""Where `patchunet predict-slide`'s time goes: the run under cProfile, its post-processing threads
and its outputs' writer thread included, summed by phase. The phases overlap (the network runs
while threads post-process earlier tiles and write later ones), so their seconds add up to more
than the wall time. The waits are not work: the writer's for the next tile, and the main thread's
for a tile's post-processing (the pipeline's stall) or, at the end, for the writer.

    .venv/bin/python -m benchmarks.perf.slide_throughput --sides 6144 --profile   (prints this too)
    .venv/bin/python -m benchmarks.perf.slide_profile SLIDE
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import ROOT
from patchunet.core.paths import MODEL_FILE

PHASES = {
    "read the tile": ("slide/tiles.py", "read_tile"),
    "network (sliding windows)": ("inference/nuclei.py", "nucleus_maps"),
    "instances from maps": ("inference/nuclei.py", "nuclei_from_maps"),
    "earlier nuclei (claimed)": ("postprocess/stitching.py", "claimed_pixels"),
    "keep the core's nuclei": ("postprocess/stitching.py", "keep_core_nuclei"),
    "nucleus table": ("postprocess/nuclei.py", "nucleus_table"),
    "outlines (GeoJSON)": ("io/geojson.py", "nuclei_feature_collection"),
    "tile store: save": ("slide/tile_store.py", "save"),
    "label image": ("slide/label_image.py", "write_label_image"),
    "GeoJSON, CSV, overview (a thread, its waits included)": ("slide/writers.py", "write_slide_outputs"),
    "the writer waiting for tiles": ("queue.py", "get"),
    "the main thread waiting (post-processing, the writer)": ("_base.py", "result"),
    "the main thread waiting for room in the writer's queue": ("queue.py", "put"),
}

WAITS = {"<method 'acquire' of '_thread.lock' objects>"}
"""A thread blocked on another: not work, left out of the functions' ranking."""


def profiled_run(slide: Path, model: str, params: Path, out: Path) -> tuple[pstats.Stats, float]:
    """Run predict-slide in this process under cProfile, each post-processing thread and the
    outputs' writer thread under its own profiler; the merged stats and the wall seconds."""
    from patchunet.cli import main
    from patchunet.inference import nuclei
    from patchunet.inference.slide import writers

    thread_profiles, lock = [], threading.Lock()
    in_threads = [(nuclei, "nuclei_from_maps"), (writers, "write_slide_outputs")]  # the functions threads run
    unprofiled = [getattr(module, name) for module, name in in_threads]

    def profiled(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            profile = cProfile.Profile()
            try:
                return profile.runcall(function, *args, **kwargs)
            finally:
                with lock:
                    thread_profiles.append(profile)

        return run

    for (module, name), function in zip(in_threads, unprofiled, strict=True):
        setattr(module, name, profiled(function))
    main_profile = cProfile.Profile()
    started = time.perf_counter()
    try:
        main_profile.runcall(
            main, ["predict-slide", str(slide), "--model", model, "--out", str(out), "--params", str(params)]
        )
    finally:
        for (module, name), function in zip(in_threads, unprofiled, strict=True):
            setattr(module, name, function)
    seconds = time.perf_counter() - started
    stats = pstats.Stats(main_profile)
    for profile in thread_profiles:
        stats.add(profile)
    return stats, seconds


def phase_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of each of PHASES' functions (summed over threads)."""
    seconds = dict.fromkeys(PHASES, 0.0)
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():
        for phase, (file_end, name) in PHASES.items():
            if function == name and filename.endswith(file_end):
                seconds[phase] += cumulative
    return seconds


def print_profile(slide: Path, model: str, params: Path, out: Path, top: int = 12) -> None:
    """Print, as Markdown, the seconds of each phase and the `top` functions by their own time."""
    with contextlib.redirect_stdout(sys.stderr):  # predict-slide's own lines stay out of the report
        stats, wall = profiled_run(slide, model, params, out)
    print(f"\nWhere the time goes in {slide.name}: {wall:.1f} s under cProfile; the phases overlap.\n")
    print("| phase | seconds | share of wall |\n|---|---:|---:|")
    for phase, seconds in phase_seconds(stats).items():
        print(f"| {phase} | {seconds:.1f} | {seconds / wall:.0%} |")
    print(f"\nThe {top} functions that took the most time themselves (threads summed, waits left out):\n")
    print("| function | calls | own s | with callees s |\n|---|---:|---:|---:|")
    working = [item for item in stats.stats.items() if item[0][2] not in WAITS]
    ranked = sorted(working, key=lambda item: item[1][2], reverse=True)[:top]
    for (filename, line, function), (_, calls, own, cumulative, _) in ranked:
        where = f"{Path(filename).name}:{line}" if line else "built-in"
        print(f"| `{function}` ({where}) | {calls} | {own:.1f} | {cumulative:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slide", type=Path)
    parser.add_argument("--model", default=str(ROOT / MODEL_FILE))
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slide-profile-") as scratch:
        print_profile(args.slide, args.model, args.params, Path(scratch) / "out")


if __name__ == "__main__":
    main()
