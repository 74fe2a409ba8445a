"""Released checkpoints: the time `cocon import-checkpoint` takes on a DPC-format ResNet18
(128 px) and ResNet34 (224 px) file (written from DPC's published layout, with an optimizer
state of the model's size, as DPC's files hold), and the CPU forward of the fine-tuning model
built from each import against the same model built from scratch (the same architecture,
random weights), in the same run. Prints JSON.

`python -m bench.import_checkpoint [--repeats 3] [--threads 2]`
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.common import best_time
from cocon.models import Classifier
from cocon.train.import_checkpoint import import_checkpoint
from cocon.train.pretrain import build_model, load_pretrained
from tests.dpc_files import dpc_state_dict, write_dpc_checkpoint

PROTOCOLS = {"resnet18": 128, "resnet34": 224}   # DPC's released weights


def adam_state(state: dict) -> dict:
    """An Adam state of the model's size: a DPC file holds one, and reading it is part of an import."""
    return {"state": {index: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros_like(value),
                              "exp_avg_sq": torch.zeros_like(value)}
                      for index, value in enumerate(state.values()) if value.is_floating_point()},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-5,
                              "amsgrad": False, "params": list(range(len(state)))}]}


def measure(network: str, folder: Path, repeats: int) -> dict:
    size = PROTOCOLS[network]
    source, out = folder / f"{network}.pth.tar", folder / f"{network}.pt"
    state = dpc_state_dict(network, seed=0)
    write_dpc_checkpoint(source, network, state_dict=state, optimizer=adam_state(state))
    seconds = best_time(lambda: import_checkpoint(source, out, {"input_size": size}), repeats)

    imported, saved = load_pretrained(out)
    torch.manual_seed(0)
    scratch = build_model(saved["model_config"], saved["model_config"]["view"])
    clip = torch.randn(1, 8, 3, 5, size, size, generator=torch.Generator().manual_seed(0))
    models = {"imported": Classifier(imported, 101).eval(), "scratch": Classifier(scratch, 101).eval()}
    timings = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model(clip)  # warm-up
        # interleaved, so that a burst of load elsewhere hits both
        for _ in range(repeats):
            for name, model in models.items():
                started = time.perf_counter()
                model(clip)
                timings[name].append(time.perf_counter() - started)
    timings = {name: min(values) for name, values in timings.items()}
    return {"backbone": network, "input_size": size, "file_mb": round(source.stat().st_size / 2 ** 20, 1),
            "import_s": round(seconds, 2), "forward_imported_s": round(timings["imported"], 3),
            "forward_scratch_s": round(timings["scratch"], 3),
            "forward_ratio": round(timings["imported"] / timings["scratch"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(network, Path(folder), args.repeats) for network in PROTOCOLS]
    print(json.dumps({"benchmark": "import_checkpoint", "machine": platform.platform(), "threads": args.threads,
                      "what": "one clip of 8 blocks x 5 frames through the fine-tuning model (eval, DPC mode)",
                      "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
