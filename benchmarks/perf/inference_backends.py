"""Which runtime to run the network on: backend x precision x threads (x window), seconds per
1000x1000 image and val AJI, side by side in one run.

Each variant segments the 6 validation images (never the test set) with the trained model
(models/patchunet.pt) and the `eval` params of params.yaml, changing only what its row names:
- torch fp32 as the stage runs it, and done well: channels-last, `torch.compile`, 32-window batches;
- ONNX Runtime fp32, and int8 (static QDQ quantisation calibrated on train patches);
- OpenVINO fp32, bf16 (AMX / AVX512-BF16 where the CPU has them) and the same int8 model;
- at 1 and 2 threads, and for the fastest, larger windows.
Variants take turns within each repeat, so machine noise hits them alike. Seconds are medians
over images and repeats: the network with its sliding windows, the post-processing, and both.
AJI is the per-image mean over the val images; its change is against torch fp32 at 2 threads.

    .venv/bin/python -m benchmarks.perf.inference_backends --repeats 3
    .venv/bin/python -m benchmarks.perf.inference_backends --models models/patchunet.pt models/ablation/base16-s0.pt
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import ROOT, Settings, val_images
from patchunet.core.paths import MODEL_FILE, PATCH_DIR
from patchunet.data.patches import PatchSet
from patchunet.evaluation.metrics import score_segmentation, summarise_scores
from patchunet.inference import runtimes
from patchunet.inference.sliding_window import image_maps
from patchunet.io.images import read_label_image, read_rgb_image
from patchunet.model.unet import PatchUNet, load_model
from patchunet.postprocess.instances import instances_from_maps


@dataclasses.dataclass
class Variant:
    name: str
    make: Callable[[], runtimes.Network]
    backend: str = "torch"
    precision: str = "fp32"
    threads: int = 2
    window: int | None = None
    batch_size: int | None = None


class ChannelsLast(torch.nn.Module):
    """The network with its weights and each batch of windows in channels-last memory order."""

    def __init__(self, model: PatchUNet) -> None:
        super().__init__()
        self.model, self.cfg = model.to(memory_format=torch.channels_last), model.cfg

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.contiguous(memory_format=torch.channels_last)).contiguous()


class Compiled(torch.nn.Module):
    def __init__(self, model: PatchUNet) -> None:
        super().__init__()
        self.model, self.cfg, self.compiled = model, model.cfg, torch.compile(model, dynamic=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.compiled(images)


def quantised_onnx(model: PatchUNet, folder: Path, patches: int) -> Path:
    """The model's ONNX export in int8 (QDQ, per channel), calibrated on `patches` train patches."""
    from onnxruntime.quantization import CalibrationDataReader

    store = PatchSet.load(ROOT / PATCH_DIR / "train")
    picked = np.random.default_rng(0).choice(len(store.images), size=min(patches, len(store.images)), replace=False)

    class TrainPatches(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                {runtimes.INPUT_NAME: (store.images[i].astype(np.float32) / 255).transpose(2, 0, 1)[None]}
                for i in picked
            )

        def get_next(self):
            return next(self.items, None)

    with contextlib.chdir(folder):  # onnxruntime's pre-processing leaves temporary files in the working folder
        return _quantise(model, folder, TrainPatches())


def _quantise(model: PatchUNet, folder: Path, calibration) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = runtimes.export_onnx(model, folder / "fp32.onnx")
    prepared = folder / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # dynamic sides defeat it
    int8 = folder / "int8.onnx"
    quantize_static(
        str(prepared),
        str(int8),
        calibration,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return int8


def compare_models(paths: list[Path], repeats: int, settings: Settings, window: int) -> None:
    """Seconds per val image (network + post-processing) of each model on the `eval` backend and
    precision at 2 threads, the models taking turns within each repeat: what a wider network costs."""
    images = [read_rgb_image(image) for _, image, _ in val_images()]
    torch.set_num_threads(2)
    networks = {path: runtimes.runtime_network(load_model(path).eval(), settings.eval, threads=2) for path in paths}
    seconds: dict[Path, list[float]] = {path: [] for path in paths}
    for network in networks.values():
        image_maps(network, images[0], settings.eval, window)  # warm-up
    for _ in range(repeats):
        for path, network in networks.items():
            for image in images:
                started = time.perf_counter()
                maps = image_maps(network, image, settings.eval, window)
                instances_from_maps(maps, network.cfg.instance_head, settings.eval)
                seconds[path].append(time.perf_counter() - started)
    print(f"{settings.eval.backend} {settings.eval.precision}, 2 threads, {len(images)} val images x {repeats} repeats")
    print("| model | parameters | s/image (median) |\n|---|---|---|")
    for path in paths:
        parameters = sum(p.numel() for p in load_model(path).parameters())
        print(f"| {path.name} | {parameters:,} | {statistics.median(seconds[path]):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-patches", type=int, default=64)
    parser.add_argument("--model", type=Path, default=ROOT / MODEL_FILE)
    parser.add_argument(
        "--models", type=Path, nargs="+", help="instead: these model files side by side, on params.yaml's eval backend"
    )
    args = parser.parse_args()
    settings = Settings.load()
    base_window = settings.eval.window or settings.patch.size
    if args.models:
        compare_models(args.models, args.repeats, settings, base_window)
        return
    model = load_model(args.model).eval()
    images = [(read_rgb_image(image), read_label_image(labels)) for _, image, labels in val_images()]
    folder = Path(tempfile.mkdtemp(prefix="patchunet-backends-"))
    int8 = quantised_onnx(load_model(args.model), folder, args.calibration_patches)

    def exported(backend: str, precision: str, threads: int, onnx_file: Path | None = None):
        cfg = dataclasses.replace(settings.eval, backend=backend, precision=precision)
        return lambda: runtimes.runtime_network(model, cfg, onnx_file=onnx_file, threads=threads)

    variants = [Variant(f"torch fp32, {t} thread(s)", lambda: model, threads=t) for t in (1, 2)]
    variants += [
        Variant("torch fp32 channels-last", lambda: ChannelsLast(load_model(args.model).eval())),
        Variant("torch fp32 torch.compile", lambda: Compiled(load_model(args.model).eval())),
        Variant("torch fp32, 32-window batches", lambda: model, batch_size=32),
    ]
    for backend, precision, onnx_file in (
        ("onnxruntime", "fp32", None),
        ("onnxruntime", "int8", int8),
        ("openvino", "fp32", None),
        ("openvino", "bf16", None),
        ("openvino", "int8", int8),
    ):
        runtime_precision = "fp32" if precision == "int8" else precision
        for threads in (1, 2):
            make = exported(backend, runtime_precision, threads, onnx_file)
            variants.append(Variant(f"{backend} {precision}, {threads} thread(s)", make, backend, precision, threads))
    for window in (512, 1024):
        variants.append(
            Variant(
                f"openvino bf16, window {window}", exported("openvino", "bf16", 2), "openvino", "bf16", window=window
            )
        )

    networks, unavailable = {}, {}
    for variant in variants:
        try:
            started = time.perf_counter()
            networks[variant.name] = variant.make()
            cfg = dataclasses.replace(settings.eval, batch_size=variant.batch_size or settings.eval.batch_size)
            torch.set_num_threads(variant.threads)
            image_maps(networks[variant.name], images[0][0], cfg, variant.window or base_window)  # warm-up
            print(f"{variant.name}: ready in {time.perf_counter() - started:.1f} s", flush=True)
        except Exception as exc:  # a runtime this machine cannot run is reported, not fatal
            unavailable[variant.name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:100]}"
            print(f"{variant.name}: unavailable ({unavailable[variant.name]})", flush=True)
    variants = [v for v in variants if v.name in networks]

    network_s = {v.name: [] for v in variants}
    post_s = {v.name: [] for v in variants}
    scores = {}
    for repeat in range(args.repeats):
        for variant in variants:
            torch.set_num_threads(variant.threads)
            cfg = dataclasses.replace(settings.eval, batch_size=variant.batch_size or settings.eval.batch_size)
            per_image = []
            for image, truth in images:
                started = time.perf_counter()
                maps = image_maps(networks[variant.name], image, cfg, variant.window or base_window)
                network_s[variant.name].append(time.perf_counter() - started)
                started = time.perf_counter()
                labels = instances_from_maps(maps, model.cfg.instance_head, cfg)
                post_s[variant.name].append(time.perf_counter() - started)
                if repeat == 0:
                    per_image.append(score_segmentation(truth, labels))
            if repeat == 0:
                scores[variant.name] = summarise_scores(per_image)["per_image_mean"]["aji"]
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)

    reference = scores["torch fp32, 2 thread(s)"]
    print(
        f"\n{len(images)} val images of {images[0][0].shape[1]}x{images[0][0].shape[0]} px, window {base_window} "
        f"unless named, overlap {settings.eval.overlap}, {args.repeats} repeats; medians"
    )
    print("| variant | network s/image | post-processing s/image | total s/image | val AJI | change |")
    print("|---|---|---|---|---|---|")
    for variant in variants:
        net, post = statistics.median(network_s[variant.name]), statistics.median(post_s[variant.name])
        totals = [a + b for a, b in zip(network_s[variant.name], post_s[variant.name], strict=True)]
        aji = scores[variant.name]
        print(
            f"| {variant.name} | {net:.3f} | {post:.3f} | {statistics.median(totals):.3f} | {aji:.4f} | "
            f"{aji - reference:+.4f} |"
        )
    for name, reason in unavailable.items():
        print(f"| {name} | unavailable: {reason} | | | | |")


if __name__ == "__main__":
    main()
