"""A run's slides: one after another in this process, or one Dask task per slide on the workers of a
Dask cluster (`predict-slide --scheduler ADDRESS`, or `--workers N` for a cluster started here).

A task loads the model once per worker process, segments its slide into the output folder every
worker shares (a path, or object storage: io/remote_folder.py), and returns the slide's summary
row with the worker that did it. A worker lost mid-slide (killed, its machine gone) costs only the
tiles it had not finished: the scheduler gives the slide to another worker, whose `segment_slide`
resumes from the finished tiles in the shared tile store. Workers on one machine split its cores
between them, so two of them do not each run the network on every core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

    from patchunet.core.config import EvalConfig, SlideConfig
    from patchunet.inference.runtimes import Network

LOCAL_WORKER = "local"
"""slides.csv's `worker` for a slide segmented without Dask."""
CONNECT_TIMEOUT_S = 5
PROGRESS_TOPIC = "patchunet-predict-slide-tiles"
"""The Dask event topic on which workers tell the client each slide's finished and total tiles."""


@dataclasses.dataclass(frozen=True)
class SlideJob:
    """What each slide of a run is segmented with: plain values, pickled to the Dask workers (which
    get paths made absolute, as a worker's working folder is not the client's)."""

    model: str  # a model file or an MLflow model URI
    tracking_uri: str
    cfg: EvalConfig
    slide_cfg: SlideConfig
    patch_size: int
    out: Path | str  # a folder, or object storage's URL (io/remote_folder.py)
    mpp: float | None  # --mpp, for slides that record none
    label_image: bool = True


@dataclasses.dataclass(frozen=True)
class LoadedNetwork:
    network: Network
    window: int
    identity: dict  # what made the tiles: a resumed slide's tiles must come from the same


def load_network(job: SlideJob, threads: int | None = None) -> LoadedNetwork:
    """The job's model on its runtime, with `threads` (default: every CPU this process may use)."""
    from patchunet.inference.predict import load_model_reference
    from patchunet.inference.runtimes import runtime_network, weights_hash

    model = load_model_reference(job.model, job.tracking_uri)
    if threads and job.cfg.backend == "torch":
        import torch

        torch.set_num_threads(threads)
    identity = {
        "model": weights_hash(model),
        "eval": dataclasses.asdict(job.cfg),
        "slide": dataclasses.asdict(job.slide_cfg),
    }
    window = job.cfg.window_for(job.patch_size, model.cfg.size_multiple)
    return LoadedNetwork(runtime_network(model, job.cfg, threads=threads), window, identity)


_LOADED: dict[tuple, LoadedNetwork] = {}


def cached_network(job: SlideJob, threads: int) -> LoadedNetwork:
    """`load_network`, kept for the next slide a worker process gets of the same run."""
    key = (job.model, job.tracking_uri, repr(job.cfg), repr(job.slide_cfg), job.patch_size, threads)
    if key not in _LOADED:
        _LOADED.clear()  # one model at a time: a worker serving several runs holds only the last's
        _LOADED[key] = load_network(job, threads)
    return _LOADED[key]


def segment_slide_file(
    path: Path, job: SlideJob, loaded: LoadedNetwork, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Open the slide at `path`, segment it (resuming from its finished tiles) and return its
    summary row but `worker`; `progress` as `segment_slide`'s."""
    from patchunet.inference.predict_slide import segment_slide
    from patchunet.inference.slide.plan import slide_scale
    from patchunet.io.slides import open_slide

    with open_slide(path) as slide:
        mpp, source = slide_scale(slide, job.mpp)
        row = segment_slide(
            slide,
            mpp,
            loaded.network,
            job.cfg,
            loaded.window,
            job.slide_cfg,
            job.out,
            loaded.identity,
            label_image=job.label_image,
            progress=progress,
        )
    return {**row, "scale_from": source}


def segment_here(
    paths: list[Path], job: SlideJob, summary: list[dict], save_summary: Callable[[list[dict]], None]
) -> None:
    """Segment the slides one after another in this process, adding each one's row to `summary`
    and saving it as soon as the slide is done."""
    loaded = load_network(job)
    for path in paths:
        summary.append({**segment_slide_file(path, job, loaded), "worker": LOCAL_WORKER})
        save_summary(summary)


def segment_on_worker(path: Path, job: SlideJob, sharers: dict[str, int]) -> dict:
    """The Dask task of one slide, on a worker: its summary row, with the worker's name (or address).
    `sharers`: per host, how many slides its workers run at once, which split its cores."""
    from distributed import get_worker
    from distributed.comm import get_address_host

    from patchunet.core.resources import worker_count

    worker = get_worker()
    share = sharers.get(get_address_host(worker.address), worker.state.nthreads)

    def tiles_done(done: int, total: int) -> None:  # to the client's bar, through the scheduler
        worker.log_event(PROGRESS_TOPIC, {"slide": str(path), "done": done, "total": total})

    row = segment_slide_file(path, job, cached_network(job, max(1, worker_count() // share)), tiles_done)
    name = worker.name if isinstance(worker.name, str) and worker.name != worker.address else worker.address
    return {**row, "worker": name}


def segment_on_dask(
    paths: list[Path],
    job: SlideJob,
    summary: list[dict],
    save_summary: Callable[[list[dict]], None],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
) -> None:
    """Segment the slides as one Dask task each, on the cluster at `scheduler` or on `workers`
    worker processes started here, adding each finished slide's row to `summary` and saving it. A
    slide that fails does not stop the others; the first failure is raised once all are done."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker
    from tqdm import tqdm

    from patchunet.core.errors import PatchUNetError

    job = with_absolute_paths(job)
    failures = []
    with dask_client(scheduler, workers) as client, CohortProgress(paths) as progress:
        client.subscribe_topic(PROGRESS_TOPIC, progress.tell)
        sharers = host_slots(client)
        futures = {
            client.submit(segment_on_worker, path.resolve(), job, sharers, key=task_key(path, job), pure=False): path
            for path in paths
        }
        for done, future in enumerate(as_completed(futures), start=1):
            path = futures[future]
            try:
                row = future.result()
            except PatchUNetError as exc:
                failures.append(str(exc))
            except KilledWorker:
                failures.append(f"{path}: the Dask workers segmenting it died each time; see the workers' logs")
            else:
                progress.slide_done(path.resolve(), row["tissue_tiles"])  # its last events may come after
                summary.append({**row, "slide": str(path)})
                save_summary(summary)
                tqdm.write(
                    f"{path}: {row['nuclei']} nuclei ({row['tissue_megapixels_per_second']:.2f} MP of tissue per s) "
                    f"by {row['worker']} ({done} of {len(paths)} slides)"
                )
                continue
            tqdm.write(f"{path}: failed ({done} of {len(paths)} slides)", file=sys.stderr)
    if failures:
        more = f" (and {len(failures) - 1} more slides failed)" if len(failures) > 1 else ""
        raise PatchUNetError(failures[0] + more)


class CohortProgress:
    """The client's one progress bar over the tiles of the slides the workers are segmenting, told
    by their events (`segment_on_worker`); its total grows as each slide starts and is planned."""

    def __init__(self, paths: list[Path]) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, desc=f"{len(paths)} slides", unit="tile")
        self.ours = {str(path.resolve()) for path in paths}  # a shared cluster may run other clients' slides
        self.tiles: dict[str, tuple[int, int]] = {}  # slide -> (finished, in all)
        self.lock = threading.Lock()  # events come on the client's event-loop thread

    def __enter__(self) -> CohortProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def tell(self, event: tuple[float, dict]) -> None:
        """A worker's event: (timestamp, {"slide", "done", "total"})."""
        _, message = event
        if message["slide"] in self.ours:
            self._show(message["slide"], message["done"], message["total"])

    def slide_done(self, path: Path, tiles: int) -> None:
        self._show(str(path), tiles, tiles)

    def _show(self, slide: str, done: int, total: int) -> None:
        with self.lock:
            earlier = self.tiles.get(slide, (0, total))
            self.tiles[slide] = (max(done, earlier[0]), total)  # a late event never takes the bar back
            self.bar.total = sum(total for _, total in self.tiles.values())
            self.bar.n = sum(done for done, _ in self.tiles.values())
            self.bar.refresh()


def with_absolute_paths(job: SlideJob) -> SlideJob:
    """The job as a worker in another working folder reads it: its model file, SQLite store and
    output folder absolute."""
    from patchunet import tracking

    model = job.model if job.model.startswith(("models:/", "runs:/")) else str(Path(job.model).resolve())
    database = tracking.sqlite_file(job.tracking_uri)
    uri = job.tracking_uri if database is None else f"sqlite:///{database.resolve()}"
    out = job.out.resolve() if isinstance(job.out, Path) else job.out
    return dataclasses.replace(job, model=model, tracking_uri=uri, out=out)


def task_key(path: Path, job: SlideJob) -> str:
    """The slide's task name on the cluster: the same for the same slide, model, settings and
    output folder, so two clients sending the same slide share one task instead of racing."""
    digest = hashlib.sha256(repr((str(path.resolve()), job)).encode()).hexdigest()[:16]
    return f"predict-slide-{path.stem}-{digest}"


def host_slots(client: Client) -> dict[str, int]:
    """Per host, how many tasks its workers run at once (their threads, all together)."""
    from distributed.comm import get_address_host

    slots: dict[str, int] = {}
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = get_address_host(address)
        slots[host] = slots.get(host, 0) + info["nthreads"]
    return slots


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Client]:
    """A client of the scheduler at `scheduler`, or of `workers` worker processes started here on
    loopback (one slide at a time each), closed however the block ends."""
    from distributed import Client, LocalCluster

    from patchunet.core.errors import PatchUNetError, first_line

    if scheduler is None:
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise PatchUNetError(f"cannot reach the Dask scheduler at {scheduler} ({first_line(exc)})") from None
    with client:
        yield client
