"""The one prepared GPU check (issue 12): run it when a GPU is available, as one call that
fits in about 8 minutes on one GPU, and put its figures in the README with the device named.

    .venv/bin/python -m bench.gpu_check --out gpu_check.json          # on a GPU machine
    .venv/bin/python -m bench.gpu_check --device cpu --small --out x.json   # the dry run (tests)

It writes one JSON (rewritten after every section, so a run cut short keeps what it
measured); a section that fails records its error and the next one runs:

- ``tvl1``: cocon.views.tvl1 on the device against OpenCV's DualTVL1OpticalFlow on the CPU,
  on the same real frames at 320x240 (../shared/data/videos, else synthetic frames): pairs/s
  of both (OpenCV with all its threads), and the mean end-point error and quantised agreement;
- ``loader``: pretraining clips/s of one loader process (ClipDataset, rgb 8x5x128, batched
  jitter) on this machine's CPU; the device path (cocon.data.device_clips: the workers'
  part, reading the stored bytes and drawing, per clip on the CPU; and a batch of 64 clips'
  JPEGs decoded on the device with nvJPEG, cropped, resized, jittered and normalised
  there), clips/s; both training loaders (cocon.data.loader.ClipBatches, ``cpu`` and
  ``device``) end to end with loader workers, in the same run; and the batched jitter alone
  on the device;
- ``train_step``: bench.train_step's full step (DPC resnet18 2d3d, dense NCE, Adam) in fp32
  eager, bf16 + channels_last_3d, and the latter under torch.compile: clips/s, peak memory,
  and model FLOP utilisation against the GPU's bf16 dense peak (FLOPs counted by
  torch.utils.flop_counter on one step);
- ``precision``: bench.precision, CoCon (rgb+flow, the demo config) trained from the same
  seed in fp32 and bf16 on the device, 300 steps: the first step's loss difference and
  gradient cosine, and the final losses against fp32 runs of two other seeds;
- ``pretrain``: a tiny end-to-end pretraining (CPC, a few steps) through
  cocon.train.pretrain.run_pretraining on the device (gpus 1; gpus 0 on the CPU), with
  ``pretrain.loader`` cpu and device: their epoch losses side by side;
- ``ddp``: with two or more GPUs, the same tiny pretraining on all of them (NCCL) against one.

Needs nothing but the repository and its .venv.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"

# dense bf16 tensor peak, FLOP/s, by device name (vendor data sheets)
BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12,
             "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12}


def bf16_peak(name: str) -> float | None:
    for key, value in BF16_PEAK.items():
        if key in name:
            return value
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def real_or_synthetic_pairs(count: int, width: int, height: int) -> tuple[list, str]:
    """``count`` grey frame pairs at ``width x height`` from the real clips (consecutive frames,
    a few per clip), else synthetic moving noise; and where they came from."""
    from cocon.data.video import iter_frames

    pairs = []
    clips = sorted(p for p in VIDEOS.rglob("*") if p.suffix.lower() in (".avi", ".mp4")) if VIDEOS.exists() else []
    for path in clips:
        grey = []
        for index, frame in enumerate(iter_frames(path, None)):
            grey.append(cv2.cvtColor(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA),
                                     cv2.COLOR_RGB2GRAY))
            if index >= 4:
                break
        pairs.extend((grey[i], grey[i + 1]) for i in range(0, len(grey) - 1, 2))
        if len(pairs) >= count:
            return pairs[:count], f"real clips in {VIDEOS}"
    rng = np.random.default_rng(0)
    while len(pairs) < count:
        base = cv2.GaussianBlur(rng.uniform(0, 255, (height + 8, width + 8)).astype(np.float32), (0, 0), 3)
        dx, dy = rng.integers(0, 4, 2)
        pairs.append((base[4:4 + height, 4:4 + width].astype(np.uint8),
                      base[4 + dy:4 + dy + height, 4 + dx:4 + dx + width].astype(np.uint8)))
    return pairs[:count], "synthetic (real clips absent)"


def check_tvl1(device: torch.device, small: bool) -> dict:
    from bench.tvl1_accuracy import compare
    from cocon.views.tvl1 import tvl1_flow

    width, height = (64, 48) if small else (320, 240)
    batch = 2 if small else 64
    reference_pairs = 1 if small else 8
    # the dry run: few iterations, the same parameters on both sides; the real run: the defaults
    params = dict(nscales=2, warps=1, outer_iterations=2, inner_iterations=5) if small else {}
    pairs, source = real_or_synthetic_pairs(batch, width, height)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
        **{{"outer_iterations": "outerIterations", "inner_iterations": "innnerIterations"}.get(k, k): v
           for k, v in params.items()})
    start = time.perf_counter()
    reference = np.stack([tvl1.calc(a, b, None) for a, b in pairs[:reference_pairs]])
    opencv_rate = reference_pairs / (time.perf_counter() - start)
    first = torch.from_numpy(np.stack([a for a, _ in pairs])).float().to(device)
    second = torch.from_numpy(np.stack([b for _, b in pairs])).float().to(device)
    result = {"frames": f"{width}x{height}", "source": source, "parameters": params or "OpenCV defaults", "opencv_cpu_threads": cv2.getNumThreads(),
              "opencv_cpu_pairs_per_s": opencv_rate, "torch": {}}
    for size in ([batch] if small else [1, 16, batch]):
        tvl1_flow(first[:size], second[:size], **params)  # warm-up
        _sync(device)
        start = time.perf_counter()
        flow = tvl1_flow(first[:size], second[:size], **params)
        _sync(device)
        result["torch"][f"batch_{size}_pairs_per_s"] = size / (time.perf_counter() - start)
    ours = flow[:reference_pairs].permute(0, 2, 3, 1).cpu().numpy()
    result["accuracy_vs_opencv"] = compare(ours, reference)
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return result


def check_loader(device: torch.device, small: bool) -> dict:
    from bench.loader_batched import build_shard, clips_per_second
    from cocon.data.clips import ClipDataset, ClipSpec, EpochSampler, apply_frame_jitter, draw_frame_jitter
    from cocon.data.device_clips import DeviceClips, StoredClips, collate_stored
    from cocon.data.loader import ClipBatches

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        if VIDEOS.exists():
            refs = build_shard(VIDEOS, Path(tmp), 2 if small else 6, max_frames=40 if small else 130)
            spec = ClipSpec(2, 2, 2) if small else ClipSpec(8, 5, 3)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                dataset = ClipDataset(refs, tmp, ["rgb"], {"rgb": 32 if small else 128}, spec, train=True, seed=0)
                result["cpu_one_process_clips_per_s"] = clips_per_second(dataset, 4 if small else 40, 2)
            finally:
                torch.set_num_threads(threads)
            # the device path: the workers' part (read the stored bytes, draw) on one CPU thread,
            # then a batch's JPEGs decoded on the device (nvJPEG on CUDA) and augmented there
            stored, clips = StoredClips(dataset), DeviceClips(dataset, device)
            batch_size, repeats = (4, 2) if small else (64, 5)
            start = time.perf_counter()
            batches = [collate_stored([stored[(repeat, item % len(dataset))] for item in range(batch_size)])
                       for repeat in range(repeats + 1)]
            result["device_path_cpu_part_clips_per_s"] = batch_size * (repeats + 1) / (time.perf_counter() - start)
            clips(batches[0])
            _sync(device)
            start = time.perf_counter()
            for batch in batches[1:]:
                clips(batch)
            _sync(device)
            result[f"device_path_on_{device.type}_clips_per_s"] = batch_size * repeats / (time.perf_counter() - start)
            result["device_path_batch"] = batch_size
            # both training loaders end to end, with loader workers, in the same run: the videos
            # repeated into enough items for ``steps`` batches (each item its own draws)
            workers = 0 if small else min(8, max(1, (os.cpu_count() or 2) - 1))
            steps = 2 if small else 12
            many = ClipDataset(refs * -(-batch_size * steps // len(refs)), tmp, ["rgb"], dataset.sizes, spec,
                               train=True, seed=0)
            result["loader_workers"] = workers
            for loader in ("cpu", "device"):
                batches = ClipBatches(many, loader, device, batch_size=batch_size,
                                      sampler=EpochSampler(len(many), batch_size, seed=0), drop_last=True,
                                      num_workers=workers, pin_memory=device.type == "cuda",
                                      multiprocessing_context="forkserver" if workers else None)
                result[f"loader_{loader}_clips_per_s"] = loader_rate(batches, device)
            result["loader_device_over_cpu"] = result["loader_device_clips_per_s"] / result["loader_cpu_clips_per_s"]
        else:
            result["cpu_one_process_clips_per_s"] = None
            result["note"] = "real clips absent: no shard to read"
    clips, frames, size = (4, 4, 32) if small else (64, 40, 128)
    batch = torch.rand(clips * frames, 3, size, size, device=device)
    factors = draw_frame_jitter(clips * frames, torch.Generator().manual_seed(0)).to(device)
    apply_frame_jitter(batch, factors)
    _sync(device)
    start = time.perf_counter()
    repeats = 2 if small else 10
    for _ in range(repeats):
        apply_frame_jitter(batch, factors)
    _sync(device)
    result[f"jitter_on_{device.type}_clips_per_s"] = clips * repeats / (time.perf_counter() - start)
    return result


def loader_rate(batches, device: torch.device) -> float:
    """Clips per second of ``batches`` (a ClipBatches) after its first batch (worker start-up),
    each batch on the device before the next is asked for, as training would take them."""
    iterator = iter(batches)
    next(iterator)
    _sync(device)
    start, clips = time.perf_counter(), 0
    for batch in iterator:
        clips += len(batch["video"])
        _sync(device)
    return clips / (time.perf_counter() - start)


def model_flops_per_clip(device: torch.device, size: int) -> float:
    """FLOPs of one training step (forward + backward) per clip, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from cocon.losses import dense_nce
    from cocon.models import DPC

    model = DPC("resnet18", in_channels=3, normalize=True).to(device)
    clips = torch.randn(1, 8, 3, 5, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        pred, gt, _ = model(clips)
        dense_nce(pred.float(), gt.float(), 0.0049).backward()
    return float(counter.get_total_flops())


def check_train_step(device: torch.device, small: bool) -> dict:
    from bench.train_step import measure

    size = 32 if small else 128
    batch, steps = (1, 1) if small else (32, 10)
    variants = {"fp32_eager": dict(channels_last=False, bf16=False, compile_model=False),
                "bf16_channels_last": dict(channels_last=True, bf16=device.type == "cuda", compile_model=False),
                "bf16_channels_last_compiled": dict(channels_last=True, bf16=device.type == "cuda", compile_model=True)}
    if small:
        variants.pop("bf16_channels_last_compiled")
    flops = model_flops_per_clip(device, size)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.machine()
    peak = bf16_peak(name) if device.type == "cuda" else None
    result = {"batch": batch, "steps": steps, "size": size, "flops_per_clip_step": flops, "bf16_peak_flops": peak}
    for variant, options in variants.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            row = measure(device, batch, steps, size, **options)
        except Exception as error:  # noqa: BLE001 - one failing variant must not hide the others
            row = {"error": f"{type(error).__name__}: {error}"}
        if "clips_per_s" in row:
            row["achieved_tflops"] = row["clips_per_s"] * flops / 1e12
            row["mfu_vs_bf16_peak"] = row["clips_per_s"] * flops / peak if peak else None
        result[variant] = row
    return result


def tiny_pretraining(root: Path, gpus: int, loader: str = "cpu") -> dict:
    """CPC on a generated demo set through cocon.train.pretrain.run_pretraining (or launch for
    several GPUs) with ``pretrain.loader``; returns the wall time, the epoch losses and the
    last history row."""
    from cocon.config import load_schema, validate
    from cocon.data.demo import generate_demo
    from cocon.data.manifest import run_manifest
    from cocon.train.pretrain import PretrainJob, launch, load_pretrained
    from cocon.views.frames import extract_frames

    # 28 frames: two dense windows a video, so that the one carved validation video has a batch of 2
    dataset = validate({"layout": "demo", "root": str(root / "videos"), "test_fraction": 0.25,
                        "demo": {"num_classes": 3, "videos_per_class": 4, "num_frames": 28, "width": 64, "height": 48},
                        "frames": {"short_side": 48}, "flow": {"method": "farneback"},
                        "pretrain": {"width": 0.125, "num_blocks": 4, "pred_steps": 1, "block_length": 2,
                                     "frame_stride": 2, "input_size": {"rgb": 32}, "batch_size": 4,
                                     "workers": 0, "gpus": gpus, "plateau_patience": 1, "loader": loader}},
                       load_schema("dataset.schema.yaml"), "tiny")
    dataset["name"] = "tiny"
    if not (root / "views" / "rgb" / "00000.h5").exists():
        generate_demo(root / "videos", **dataset["demo"])
        run_manifest(dataset, root / "manifest.tsv", root / "excluded.tsv")
        extract_frames(dataset, root / "manifest.tsv", "00000", root / "views" / "rgb" / "00000.h5")
    out = root / f"gpus{gpus}-{loader}"
    job = PretrainJob(dataset, "cpc", ["rgb"], str(root / "views"), str(root / "manifest.tsv"), str(out / "cpc-rgb.pt"),
                      str(out / "state"), epochs=2, threads=1)
    start = time.perf_counter()
    launch(job)
    seconds = time.perf_counter() - start
    _, state = load_pretrained(out / "cpc-rgb.pt")
    last = state["history"][-1] if state.get("history") else {}
    return {"gpus": gpus, "loader": loader, "seconds": seconds, "epochs": state.get("epoch", -1) + 1,
            "epoch_losses": [row["loss"] for row in state.get("history", [])],
            "last_history": {k: (float(v) if isinstance(v, (int, float)) else str(v)) for k, v in last.items()}}


def check_pretrain(device: torch.device, small: bool) -> dict:
    gpus = 1 if device.type == "cuda" else 0
    with tempfile.TemporaryDirectory() as tmp:
        result = tiny_pretraining(Path(tmp), gpus)
        on_device = tiny_pretraining(Path(tmp), gpus, loader="device")
    result["device_loader"] = on_device
    result["device_loader_epoch_loss_relative_differences"] = [
        abs(device_loss - cpu_loss) / abs(cpu_loss)
        for device_loss, cpu_loss in zip(on_device["epoch_losses"], result["epoch_losses"])]
    return result


def check_precision(device: torch.device, small: bool) -> dict:
    """bench.precision on the device: 300 steps of the demo config (width 0.25, 64-px crops)
    in fp32 and bf16 from the same seed, and fp32 from two other seeds as the yardstick."""
    from bench.precision import build_demo_views, compare

    with tempfile.TemporaryDirectory() as tmp:
        views = build_demo_views(Path(tmp))
        if small:
            result = compare(views, views.parent / "manifest.tsv", device, steps=4, seeds=2)
        else:
            result = compare(views, views.parent / "manifest.tsv", device, steps=300, width=0.25, size=64, seeds=3)
    # the curves themselves every 10th step: the JSON stays readable
    for precision in ("fp32", "bf16"):
        result[precision] = result[precision][::10]
    return result


def check_ddp(device: torch.device, small: bool) -> dict:
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count < 2:
        return {"skipped": f"{count} GPU(s): DDP needs two or more"}
    with tempfile.TemporaryDirectory() as tmp:
        one = tiny_pretraining(Path(tmp), 1)
        many = tiny_pretraining(Path(tmp), count)
    return {"one_gpu": one, f"{count}_gpus_nccl": many}


SECTIONS = {"tvl1": check_tvl1, "loader": check_loader, "train_step": check_train_step, "precision": check_precision,
            "pretrain": check_pretrain, "ddp": check_ddp}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--small", action="store_true", help="small sizes (the CPU dry run)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda, but torch sees no CUDA device (use --device cpu --small for the dry run)")
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.machine()})",
              "gpus": torch.cuda.device_count() if device.type == "cuda" else 0, "torch": torch.__version__,
              "opencv": cv2.__version__, "small": args.small, "cpu_threads": torch.get_num_threads(), "sections": {}}
    started = time.perf_counter()
    for name, check in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        section_start = time.perf_counter()
        try:
            report["sections"][name] = check(device, args.small)
        except Exception as error:  # noqa: BLE001 - record it and go on to the next section
            report["sections"][name] = {"error": f"{type(error).__name__}: {error}",
                                        "traceback": traceback.format_exc(limit=6)}
        report["sections"][name]["seconds"] = time.perf_counter() - section_start
        report["seconds"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
        print(f"gpu_check: {name} done in {report['sections'][name]['seconds']:.1f} s", flush=True)
    print(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
