"""Training clips per second of the paper's model (resnet18 2d3d DPC, 8 blocks of 5 frames
at 128 px, rgb) for one full step (forward, dense NCE, backward, Adam), in fp32 eager
against channels_last_3d (and torch.compile with --compile), on this machine's CPU or,
with --device cuda, fp32 against bf16 autocast + channels_last_3d with peak memory.
``--widths`` times the same step at several encoder widths (the evidence benchmark's is
0.125 at 40 px: ``--widths 0.125 0.25 0.375 0.5 --size 40 --batch 16 --threads 1``).
Prints JSON."""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from cocon.losses import dense_nce
from cocon.models import DPC


def measure(device: torch.device, batch: int, steps: int, size: int, channels_last: bool, bf16: bool,
            compile_model: bool, width: float = 1.0) -> dict:
    torch.manual_seed(0)
    model = DPC("resnet18", in_channels=3, normalize=True, width=width).to(device)
    clips = torch.randn(batch, 8, 3, 5, size, size, device=device)
    if channels_last:
        model.encoder.to(memory_format=torch.channels_last_3d)
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred, gt, _ = forward(clips)
        loss = dense_nce(pred.float(), gt.float(), 0.0049)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (and compilation)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"clips_per_s": round(batch * steps / seconds, 3), "seconds_per_step": round(seconds / steps, 3)}
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default: 2 on CPU, 16 on CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0], help="encoder widths (the paper's: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    cuda = device.type == "cuda"
    batch = args.batch or (16 if cuda else 2)
    steps = args.steps or (20 if cuda else 3)
    variants = {"fp32_eager": dict(channels_last=False, bf16=False, compile_model=False)}
    if cuda:
        variants["bf16_channels_last"] = dict(channels_last=True, bf16=True, compile_model=False)
    else:
        variants["fp32_channels_last"] = dict(channels_last=True, bf16=False, compile_model=False)
    if args.compile:
        variants["compiled" if not cuda else "bf16_channels_last_compiled"] = dict(
            channels_last=True, bf16=cuda, compile_model=True)
    by_width = {}
    for width in args.widths:
        results = {name: measure(device, batch, steps, args.size, width=width, **options) for name, options in variants.items()}
        baseline = results["fp32_eager"]["clips_per_s"]
        for result in results.values():
            result["speedup_vs_fp32_eager"] = round(result["clips_per_s"] / baseline, 3)
        by_width[str(width)] = results
    narrowest = by_width[str(args.widths[0])]
    for results in by_width.values():
        for name, result in results.items():
            result["step_time_vs_first_width"] = round(result["seconds_per_step"] / narrowest[name]["seconds_per_step"], 3)
    widths = by_width if len(args.widths) > 1 else {"width": args.widths[0], **by_width[str(args.widths[0])]}
    print(json.dumps({"benchmark": "train_step", "device": torch.cuda.get_device_name() if cuda else
                      (platform.processor() or platform.machine()), "threads": torch.get_num_threads(),
                      "batch": batch, "steps": steps, "size": args.size, "torch": torch.__version__,
                      **(widths if len(args.widths) == 1 else {"widths": widths})}, indent=2))


if __name__ == "__main__":
    main()
