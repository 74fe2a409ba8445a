"""The analyses at UCF101's scale, on synthetic features: peak memory and time of the analyse
stage (class consistency, t-SNE, the similarity histograms, per-class gains, soft alignment,
nearest neighbours) and of retrieval, against the analysis rule's mem_mb for ucf101.

The features mimic split 1 of UCF101: 9,537 train videos (the 5% validation part carved as
fine-tuning carves it) and 3,783 test videos of 101 classes, D = 256, for the paper's
initialisations (random, CPC, 4-view CoCon) and its four views, with 18 block features per
test video. Class names and video ids are UCF101's when ../shared/data holds its split
lists (then t-SNE draws the paper's 21 classes, as config/datasets/ucf101.yaml says).
Each stage runs in a process of its own, which reports its own peak resident memory and
its resident memory once the libraries are loaded (start_mb).

Baseline, in the same run: the similarity histogram as it was built before issue 17 (every
pair's two feature vectors side by side, then one cosine per pair), against the chunked one,
on the first --baseline-videos test videos of one feature set. Prints JSON.

    .venv/bin/python -m bench.analysis_scale [--workdir DIR] [--baseline-videos 1000]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, SHARED_DATA
from cocon.analysis.features import ALIGNMENT_BLOCKS, FeatureSet
from cocon.config import load_dataset_config, read_yaml

UCF101_LISTS = SHARED_DATA / "splits" / "ucfTrainTestlist"
TRAIN_VIDEOS, TEST_VIDEOS, NUM_CLASSES, DIM = 9537, 3783, 101, 256
INITS = ("random", "ucf101/cpc", "ucf101/cocon/rgb+flow+pose+seg")
VIEWS = ("rgb", "flow", "pose", "seg")


def ucf101_videos() -> tuple[list[str], list[tuple[str, int, str]]]:
    """Class names and (video id, label, role) of split 1: UCF101's own lists where present,
    else made-up names of the same counts."""
    if (UCF101_LISTS / "classInd.txt").is_file():
        names = [line.split()[1] for line in (UCF101_LISTS / "classInd.txt").read_text().split("\n") if line.strip()]
        index = {name.lower(): number for number, name in enumerate(names)}
        videos = []
        for role, listing in (("train", "trainlist01.txt"), ("test", "testlist01.txt")):
            for line in (UCF101_LISTS / listing).read_text().split("\n"):
                if line.strip():
                    path = line.split()[0]
                    label = index[path.split("/")[0].lower()]
                    videos.append((Path(path).stem, label, role))
        return names, videos
    names = [f"Class{number:03d}" for number in range(NUM_CLASSES)]
    generator = np.random.default_rng(0)
    videos = [(f"v_train_{number:05d}", int(label), "train")
              for number, label in enumerate(generator.integers(0, NUM_CLASSES, TRAIN_VIDEOS))]
    videos += [(f"v_test_{number:05d}", int(label), "test")
               for number, label in enumerate(generator.integers(0, NUM_CLASSES, TEST_VIDEOS))]
    return names, videos


def write_inputs(workdir: Path, dataset: dict) -> dict:
    """The manifest, one tiny rgb frame per video (the neighbour figure's images), synthetic
    features of every (init, view) and a finetune_details.json; returns the analyse job's paths."""
    from cocon.data.manifest import ManifestRow, write_manifest
    from cocon.data.clips import split_videos
    from cocon.data.shards import ShardWriter
    from cocon.data.shards import encode_jpeg
    from cocon.train.evaluate import build_report

    names, videos = ucf101_videos()
    shard_size = 100
    rows = [ManifestRow(video_id, names[label], label, role, f"{number // shard_size:05d}", "ok", 1, 25.0, 32, 24,
                        f"{video_id}.avi") for number, (video_id, label, role) in enumerate(videos)]
    write_manifest(rows, workdir / "manifest.tsv", workdir / "excluded.tsv")
    frame = encode_jpeg(np.full((24, 32, 3), 128, np.uint8), 90)
    for start in range(0, len(rows), shard_size):
        with ShardWriter(workdir / "views" / "rgb" / f"{rows[start].shard}.h5", "rgb", {}) as writer:
            for row in rows[start:start + shard_size]:
                writer.add_video(row.video_id, [frame], {"num_frames": 1, "label": row.label})
    train, val, test = split_videos(workdir / "manifest.tsv", 1, dataset["finetune"]["val_fraction"],
                                    dataset["finetune"]["seed"])
    ordered = train + val + test
    labels = np.array([video.label_index for video in ordered])
    roles = np.array(["train"] * len(train) + ["val"] * len(val) + ["test"] * len(test))
    test_ids = np.array([video.video_id for video in test])
    generator = np.random.default_rng(1)
    features, entries = {}, {}
    for init in INITS:
        for view in VIEWS:
            # class structure of random strength, plus the positive offset of a ReLU-like output
            centres = generator.normal(size=(NUM_CLASSES, DIM))
            context = (generator.uniform(0.2, 1.0) * centres[labels] + generator.normal(size=(len(labels), DIM))
                       + 2.0).astype(np.float32)
            blocks = generator.normal(size=(len(test), ALIGNMENT_BLOCKS, DIM)).astype(np.float32)
            path = workdir / "features" / init.replace("/", "_") / f"{view}.npz"
            FeatureSet(init, view, 1, np.array([video.video_id for video in ordered]), labels, roles, context,
                       np.ones(len(labels), dtype=int), test_ids, blocks).save(path)
            features[(init, view)] = str(path)
            logits = 3.0 * np.eye(NUM_CLASSES)[labels[roles == "test"]] + generator.normal(size=(len(test), NUM_CLASSES))
            scores = workdir / "scores" / init.replace("/", "_") / f"{view}.npz"
            scores.parent.mkdir(parents=True, exist_ok=True)
            np.savez(scores, scores=logits, labels=labels[roles == "test"], video_ids=test_ids, windows=len(test))
            entries[(init, view)] = {"scores": str(scores), "checkpoint": None}
    _, details = build_report(dataset, 1, workdir / "manifest.tsv", entries)
    (workdir / "finetune_details.json").write_text(json.dumps(details))
    return {"features": features, "test_videos": len(test), "train_videos": len(train) + len(val)}


def run_stage(stage: str, workdir: Path, extra: list[str]) -> dict:
    """One stage in a fresh process: {"seconds", "peak_mb"} as the process measured itself."""
    output = subprocess.run([sys.executable, "-m", "bench.analysis_scale", "--child", stage, "--workdir", str(workdir),
                             *extra], check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(output.stdout.strip().splitlines()[-1])


def naive_histogram(features: np.ndarray, labels: np.ndarray, bins: int = 50):
    """The similarity histogram before issue 17: both vectors of every pair at once."""
    from sklearn.metrics import roc_auc_score

    unit = features.astype(np.float64)
    unit = unit / (np.linalg.norm(unit, axis=1, keepdims=True) + 1e-8)
    first, second = np.triu_indices(len(unit), k=1)
    cosine, same = np.einsum("pd,pd->p", unit[first], unit[second]), labels[first] == labels[second]
    edges = np.histogram_bin_edges(cosine, bins=bins)
    return roc_auc_score(same, cosine), np.histogram(cosine[same], bins=edges)[0]


def resident_mb() -> float | None:
    """This process's resident memory now (Linux), in MB."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    return round(int(line.split()[1]) / 1024, 1)


def child(stage: str, workdir: Path, args) -> None:
    import cocon.analysis.analyse  # noqa: F401  (the libraries every stage loads, before the baseline reading)

    dataset = load_dataset_config(REPO / "config" / "datasets" / "ucf101.yaml", "ucf101")
    result = {"start_mb": resident_mb()}
    started = time.perf_counter()
    if stage == "analyse":
        from cocon.analysis.analyse import AnalyseJob, run_analyses

        keyed = {tuple(key.split("|")): path for key, path in json.loads((workdir / "inputs.json").read_text()).items()}
        run_analyses(AnalyseJob(dataset, 1, keyed, str(workdir / "manifest.tsv"), str(workdir / "finetune_details.json"),
                                str(workdir / "views"), {}, str(workdir / "figures"), str(workdir / "consistency.json"),
                                str(workdir / "consistency.md"), threads=args.threads))
    elif stage == "retrieval":
        from cocon.analysis.retrieval import write_retrieval

        paths = list(json.loads((workdir / "inputs.json").read_text()).values())
        write_retrieval(paths, dataset["analysis"]["retrieval_ks"], workdir / "retrieval.json",
                        workdir / "retrieval.md", memory_mb=dataset["analysis"]["memory_mb"])
    elif stage in ("naive_histogram", "chunked_histogram"):
        from cocon.analysis.pairs import pair_histogram

        features = FeatureSet.load(next(iter(json.loads((workdir / "inputs.json").read_text()).values())))
        test = features.role("test")
        context, labels = features.context[test][:args.baseline_videos], features.labels[test][:args.baseline_videos]
        del features
        result["start_mb"] = resident_mb()
        started = time.perf_counter()
        if stage == "naive_histogram":
            auc, counts = naive_histogram(context, labels)
        else:
            pairs = pair_histogram(context, labels, "raw", memory_mb=dataset["analysis"]["memory_mb"])
            auc, counts = pairs.auc, pairs.same_counts
        result.update(auc=auc, same_counts=[int(count) for count in counts])
    else:
        raise SystemExit(f"unknown stage {stage}")
    result.update(seconds=round(time.perf_counter() - started, 2),
                  peak_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="where the synthetic inputs go (default: a temporary folder)")
    parser.add_argument("--baseline-videos", type=int, default=1000,
                        help="test videos of the naive-against-chunked histogram comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir, args)
        return
    with tempfile.TemporaryDirectory() as folder:
        workdir = args.workdir or Path(folder)
        workdir.mkdir(parents=True, exist_ok=True)
        dataset = load_dataset_config(REPO / "config" / "datasets" / "ucf101.yaml", "ucf101")
        started = time.perf_counter()
        inputs = write_inputs(workdir, dataset)
        (workdir / "inputs.json").write_text(json.dumps({"|".join(key): path for key, path in inputs["features"].items()}))
        setup = time.perf_counter() - started
        extra = ["--threads", str(args.threads), "--baseline-videos", str(args.baseline_videos)]
        stages = {stage: run_stage(stage, workdir, extra) for stage in ("analyse", "retrieval")}
        naive = run_stage("naive_histogram", workdir, extra)
        chunked = run_stage("chunked_histogram", workdir, extra)
    resources = read_yaml(REPO / "config" / "config.yaml")["resources"]["analysis"]
    budget = resources.get("ucf101", resources)["mem_mb"]
    pairs = args.baseline_videos * (args.baseline_videos - 1) // 2
    print(json.dumps({
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, threads {args.threads}",
        "scale": {"test_videos": inputs["test_videos"], "train_videos": inputs["train_videos"], "classes": NUM_CLASSES,
                  "dim": DIM, "inits": list(INITS), "views": list(VIEWS),
                  "class_names": "UCF101's" if (UCF101_LISTS / "classInd.txt").is_file() else "made up"},
        "setup_s": round(setup, 1),
        "stages": stages,
        "rule_mem_mb_ucf101": budget,
        "peak_over_budget": {stage: round(result["peak_mb"] / budget, 3) for stage, result in stages.items()},
        "histogram_baseline": {
            "videos": args.baseline_videos, "pairs": pairs,
            "naive": {key: naive[key] for key in ("seconds", "start_mb", "peak_mb")},
            "chunked": {key: chunked[key] for key in ("seconds", "start_mb", "peak_mb")},
            # what the computation added to the process, loaded libraries and inputs aside
            "added_mb_ratio_chunked_over_naive": round((chunked["peak_mb"] - chunked["start_mb"])
                                                       / (naive["peak_mb"] - naive["start_mb"]), 4),
            "time_ratio_chunked_over_naive": round(chunked["seconds"] / naive["seconds"], 2),
            "same_counts_equal": naive["same_counts"] == chunked["same_counts"],
            "auc_difference": abs(naive["auc"] - chunked["auc"]),
        },
    }, indent=1))


if __name__ == "__main__":
    main()
