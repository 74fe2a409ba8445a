"""``cocon``: every stage of the workflow, runnable without Snakemake."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from cocon.config import ConfigError, load_dataset_config


def _dataset(args) -> dict:
    return load_dataset_config(args.dataset, args.name)


def cmd_demo(args) -> None:
    from cocon.data.demo import generate_demo

    settings = _dataset(args)["demo"]
    paths = generate_demo(args.out, **settings)
    print(f"wrote {len(paths)} demo videos under {args.out}")


def cmd_manifest(args) -> None:
    from cocon.data.manifest import run_manifest, summarize

    rows = run_manifest(_dataset(args), args.manifest, args.excluded, args.threads)
    print(summarize(rows))


def cmd_shards(args) -> None:
    from cocon.data.datasets import assign_shards, list_videos

    dataset = _dataset(args)
    for shard, members in assign_shards(list_videos(dataset), dataset["shard_size"]).items():
        print(f"{shard}\t{len(members)}")


def cmd_frames(args) -> None:
    from cocon.views.frames import extract_frames

    count = extract_frames(_dataset(args), args.manifest, args.shard, args.out)
    print(f"wrote {count} videos to {args.out}")


# views computed from an rgb shard: command -> (module, function, what it stores)
DERIVED_VIEWS = {
    "flow": ("cocon.views.flow", "extract_flow", "optical flow"),
    "pose": ("cocon.views.pose", "extract_pose", "17 COCO keypoint heatmaps"),
    "seg": ("cocon.views.seg", "extract_seg", "person-segmentation masks"),
}


def cmd_derived_view(args) -> None:
    module, function, _ = DERIVED_VIEWS[args.command]
    extract = getattr(importlib.import_module(module), function)
    count = extract(_dataset(args), args.rgb, args.out, args.threads)
    print(f"wrote the {args.command} view of {count} videos to {args.out}")


def cmd_show(args) -> None:
    from cocon.views.show import contact_sheet

    beside = None
    if args.beside:
        beside = (args.beside, args.beside_manifest or str(Path(args.beside).parent / "manifest.tsv"))
    print(contact_sheet(args.views, args.manifest, args.video, args.out, args.rows, beside=beside,
                        titles=tuple(args.titles) if args.titles else None))


def cmd_import_views(args) -> None:
    from cocon.views.imports import import_views

    dataset = _dataset(args)
    if not (dataset["frames"]["import"] or dataset["flow"]["import"]):
        raise ConfigError(f"{args.dataset}: neither frames.import nor flow.import is set: nothing to import "
                          "(`cocon frames` and `cocon flow` decode videos and compute flow)")
    counts = import_views(dataset, args.out, args.threads)
    print(f"wrote {args.out}/manifest.tsv ({counts['usable']} of {counts['videos']} listed videos usable; the others "
          f"are in excluded.tsv) and views/rgb, views/flow: {counts['shards']} shards each")


def _view_paths(pairs: list[str] | None, option: str) -> dict[str, str]:
    paths = {}
    for pair in pairs or []:
        view, sep, path = pair.partition("=")
        if not sep:
            raise ValueError(f"{option} {pair!r}: expected VIEW=PATH")
        paths[view] = path
    return paths


def cmd_pretrain(args) -> None:
    from cocon.train.pretrain import PretrainJob, launch

    launch(PretrainJob(_dataset(args), args.method, args.views, args.views_dir, args.manifest, args.out,
                       args.state, split=args.split, init=_view_paths(args.init, "--init") or None,
                       epochs=args.epochs))


def cmd_import_checkpoint(args) -> None:
    from cocon.train.import_checkpoint import import_checkpoint

    options = {"view": args.view, "backbone": args.backbone, "input_size": args.input_size,
               "num_blocks": args.num_blocks, "block_length": args.block_length, "pred_steps": args.pred_steps,
               "frame_stride": args.frame_stride}
    imported = import_checkpoint(args.source, args.out, options)
    print(imported.summary())
    for item in imported.not_imported:
        print(f"not imported: {item}")
    print(f"wrote {args.out}")


def cmd_finetune(args) -> None:
    from cocon.train.finetune import FinetuneJob, launch

    launch(FinetuneJob(_dataset(args), args.init, args.view, args.views_dir, args.manifest, args.pretrained,
                       args.out, args.scores, args.state, split=args.split, epochs=args.epochs))


def _feature_paths(paths: list[str]) -> tuple[dict[tuple[str, str], str], int]:
    """(init, view) -> path of each features file, as the files name themselves, and their one split."""
    from cocon.analysis.features import FeatureSet

    keyed, splits = {}, set()
    for path in paths:
        features = FeatureSet.load(path)
        if (features.init, features.view) in keyed:
            raise ValueError(f"{path} and {keyed[(features.init, features.view)]}: both hold {features.init} "
                             f"{features.view}")
        keyed[(features.init, features.view)] = path
        splits.add(features.split)
    if len(splits) != 1:
        raise ValueError(f"--features: files of splits {sorted(splits)}; analyse one split at a time")
    return keyed, splits.pop()


def cmd_features(args) -> None:
    from cocon.analysis.features import FeaturesJob, run_features

    dataset = _dataset(args)
    features = run_features(FeaturesJob(dataset, args.init, args.view, args.views_dir, args.manifest,
                                        args.pretrained, args.out, split=args.split, batch_size=args.batch_size,
                                        gpus=dataset["analysis"]["gpus"], threads=args.threads))
    print(f"wrote {args.out}: {len(features.video_ids)} videos, {features.context.shape[1]}-d, "
          f"block features of {len(features.block_video_ids)} test videos")


def cmd_retrieval(args) -> None:
    from cocon.analysis.retrieval import write_retrieval

    document = write_retrieval(args.features, args.ks, args.json, args.markdown, memory_mb=args.memory_mb)
    print(f"wrote {args.json}: {len(document['rows'])} rows")


def cmd_probe(args) -> None:
    from cocon.analysis.probe import write_probe

    document = write_probe(args.features, args.cs, args.seed, args.json, args.markdown, threads=args.threads)
    print(f"wrote {args.json}: {len(document['rows'])} rows")


def cmd_analyse(args) -> None:
    from cocon.analysis.analyse import AnalyseJob, run_analyses

    features, split = _feature_paths(args.features)
    run_analyses(AnalyseJob(_dataset(args), split, features, args.manifest, args.details, args.views_dir,
                            _view_paths(args.run, "--run"), args.figures, args.consistency_json,
                            args.consistency_markdown, threads=args.threads))
    print(f"wrote {args.figures}/index.json and {args.consistency_markdown}")


def cmd_report(args) -> None:
    from cocon.train.evaluate import write_report

    entries = {}
    for item in args.scores:
        key, sep, path = item.partition("=")
        init, slash, view = key.rpartition("/")
        if not sep or not slash:
            raise ValueError(f"--scores {item!r}: expected INIT/VIEW=PATH")
        entries[(init, view)] = {"scores": path, "checkpoint": None}
    document = write_report(_dataset(args), args.split, args.manifest, entries, args.json, args.markdown,
                            args.details)
    print(f"wrote {args.json}: {len(document['results'])} results")


def cmd_summarize(args) -> None:
    from cocon.train.evaluate import write_split_summary

    document = write_split_summary(args.results, args.json, args.markdown)
    print(f"wrote {args.json}: {len(document['results'])} results over splits {document['splits']}")


def cmd_paper(args) -> None:
    import yaml

    from cocon.experiments import paper_cells
    from cocon.paper import write_paper

    workflow = yaml.safe_load(open(args.config))
    datasets = {name: load_dataset_config(path, name) for name, path in workflow["datasets"].items()}
    if args.name not in datasets:
        raise ConfigError(f"{args.config}: datasets: no dataset {args.name!r} (datasets: {sorted(datasets)})")
    cells = paper_cells(args.name, datasets)
    weights = {name: dataset["finetune"]["ensemble_weights"] for name, dataset in datasets.items()}
    document = write_paper(args.name, cells, weights, args.json, args.markdown)
    run = sum(cell["run"] for table in document["tables"] for row in table["rows"] for cell in row["cells"])
    print(f"wrote {args.json}: {run} of {len(cells)} cells run")


def cmd_evidence(args) -> None:
    from pathlib import Path

    from cocon.analysis.features import FeatureSet
    from cocon.evidence import SeedRun, write_evidence

    seeds, runs = [], []
    for item in args.run:
        seed, sep, folder = item.partition("=")
        if not sep or not seed.isdigit():
            raise ConfigError(f"--run {item!r}: expected SEED=RESULTS_SPLIT_FOLDER, e.g. 1=results/evidence_seed1/split1")
        folder = Path(folder)
        features = {}
        for path in sorted((folder / "features").rglob("*.npz")):
            loaded = FeatureSet.load(path)
            features[(loaded.init, loaded.view)] = str(path)
        if not features:
            raise ConfigError(f"--run {item!r}: no features files under {folder / 'features'}")
        joint = {}
        for metrics in sorted((folder / "pretrain").glob("*/*/joint.state/metrics.csv")):
            method, view_set = metrics.parts[-4], metrics.parts[-3]
            joint[f"{folder.parent.name}/{method}/{view_set}"] = str(metrics)
        cpc = {view: str(folder / "pretrain" / "cpc" / f"{view}.pt") for view in ("rgb", "flow")}
        joint_path = folder / "pretrain" / "cocon" / "rgb+flow" / "joint.pt"
        seeds.append(int(seed))
        runs.append(SeedRun(folder.parent.name, str(folder / "analysis" / "retrieval.json"),
                            str(folder / "analysis" / "probe.json"), features, runs=joint,
                            cpc=cpc if joint_path.is_file() else {},
                            joint=str(joint_path) if joint_path.is_file() else None))
    document = write_evidence(seeds, runs, args.json, args.markdown, _dataset(args), views_dir=args.views_dir,
                              manifest=args.manifest, logs=[str(Path(run.retrieval).parents[2] / "logs") for run in runs])
    print(document["conclusion"])


def cmd_seeds(args) -> None:
    from cocon.train.evaluate import seeds_markdown

    documents = [json.loads(open(path).read()) for path in args.results]
    text = seeds_markdown(documents)
    with open(args.out, "w") as handle:
        handle.write(text)
    print(text)


def cmd_inspect(args) -> None:
    from cocon.data.shards import ShardReader

    with ShardReader(args.shard) as reader:
        info = {"path": str(reader.path), "view": reader.view,
                "attrs": {key: str(value) for key, value in reader.attrs.items()},
                "videos": {video_id: reader.num_frames(video_id) for video_id in reader.video_ids}}
    print(json.dumps(info, indent=2))


def _shard_files(paths: list[str]) -> list[Path]:
    """The view shards the paths name: a shard file itself, every ``*.h5`` under a folder."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.rglob("*.h5"))
            if not found:
                raise ValueError(f"{path}: no view shards (*.h5) under this folder")
            files += found
        else:
            files.append(path)
    return files


def cmd_verify(args) -> None:
    from cocon.data.shards import verify_shards

    verification = verify_shards(_shard_files(args.paths), args.threads)
    # a ShardError listing every damaged shard, video and frame: `main` prints it and exits 1
    verification.raise_on_damage()
    print(f"{verification.summary()}: no damage")


def encoder_arguments(sub: argparse.ArgumentParser, init_role: str, pretrained_help: str) -> None:
    """The options that say which encoder of which view runs on which videos."""
    sub.add_argument("--init", required=True,
                     help=f"random, <dataset>/cpc or <dataset>/<method>/<view set>: {init_role}")
    sub.add_argument("--view", required=True, choices=["rgb", "flow", "pose", "seg"])
    sub.add_argument("--views-dir", required=True, help="the views folder, e.g. results/demo/views")
    sub.add_argument("--manifest", required=True, help="the dataset's manifest.tsv")
    sub.add_argument("--pretrained", help=pretrained_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocon", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str, dataset: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if dataset:
            sub.add_argument("--dataset", required=True, help="dataset config file (config/datasets/*.yaml)")
            sub.add_argument("--name", help="dataset name recorded in outputs (default: the config file stem)")
        sub.set_defaults(handler=handler)
        return sub

    sub = command("demo", cmd_demo, "generate the embedded demo dataset (layout: demo)")
    sub.add_argument("--out", required=True, help="folder to write <class>/<video>.avi into")

    sub = command("manifest", cmd_manifest, "list and probe every video; write manifest.tsv and excluded.tsv")
    sub.add_argument("--manifest", required=True, help="output manifest.tsv")
    sub.add_argument("--excluded", required=True, help="output excluded.tsv")
    sub.add_argument("--threads", type=int, default=1, help="probe processes")

    command("shards", cmd_shards, "print the shards the dataset is split into, and their sizes")

    sub = command("frames", cmd_frames, "decode the videos of one shard into an rgb view shard")
    sub.add_argument("--manifest", required=True, help="manifest.tsv from `cocon manifest`")
    sub.add_argument("--shard", required=True, help="shard name, e.g. 00000")
    sub.add_argument("--out", required=True, help="output rgb shard (.h5)")

    for name, (_, _, what) in DERIVED_VIEWS.items():
        sub = command(name, cmd_derived_view, f"{what} of one rgb shard into a {name} view shard")
        sub.add_argument("--rgb", required=True, help="input rgb shard (.h5)")
        sub.add_argument("--out", required=True, help=f"output {name} shard (.h5)")
        sub.add_argument("--threads", type=int, default=1, help="processes (videos in parallel)")

    sub = command("pretrain", cmd_pretrain, "pretrain per-view (cpc) or joint (cocon, cpc+sim, cpc+sync) encoders")
    sub.add_argument("--method", required=True, choices=["cpc", "cocon", "cpc+sim", "cpc+sync"])
    sub.add_argument("--views-dir", required=True, help="the views folder, e.g. results/demo/views")
    sub.add_argument("--manifest", required=True, help="the dataset's manifest.tsv")
    sub.add_argument("--views", required=True, nargs="+", choices=["rgb", "flow", "pose", "seg"],
                     help="one view for cpc; the view set of a joint method")
    sub.add_argument("--out", required=True, help="the final checkpoint (a joint one holds every view)")
    sub.add_argument("--init", action="append", metavar="VIEW=PATH", help="cpc checkpoint per view (joint methods)")
    sub.add_argument("--state", required=True, help="folder for the per-epoch state a rerun resumes from")
    sub.add_argument("--epochs", type=int, help="override pretrain.cpc_epochs / cocon_epochs")
    sub.add_argument("--split", type=int, default=1, choices=[1, 2, 3], help="official split whose train videos it sees")

    sub = command("import-checkpoint", cmd_import_checkpoint,
                  "read a released checkpoint (DPC's main.py or eval/test.py files, or one of ours) safely, check it, "
                  "and write it as a view checkpoint that load_pretrained and fine-tuning start from", dataset=False)
    sub.add_argument("source", metavar="SRC", help="the checkpoint file, e.g. k400_224_r34_dpc-rnn.pth.tar")
    sub.add_argument("--out", required=True, help="output view checkpoint (.pt)")
    sub.add_argument("--view", choices=["rgb", "flow", "pose", "seg"],
                     help="the view its encoder reads (default: what the first convolution's channels say)")
    sub.add_argument("--backbone", choices=["resnet18", "resnet34"],
                     help="checked against the file's net and weights (default: what they say)")
    sub.add_argument("--input-size", type=int, help="crop size the encoder was trained at (DPC: 128, 224 for R34)")
    sub.add_argument("--num-blocks", type=int, help="blocks per clip (DPC: 8)")
    sub.add_argument("--block-length", type=int, help="frames per block (DPC: 5)")
    sub.add_argument("--pred-steps", type=int, help="blocks predicted (DPC: 3)")
    sub.add_argument("--frame-stride", type=int, help="take 1 frame in this many (DPC: 3)")

    sub = command("finetune", cmd_finetune, "fine-tune one view from a pretrained checkpoint (or random) and test it")
    encoder_arguments(sub, "names the run in its outputs", "the pretrained view checkpoint (omit for --init random)")
    sub.add_argument("--out", required=True, help="the fine-tuned model (.pt)")
    sub.add_argument("--scores", required=True, help="test softmax per video (.npz)")
    sub.add_argument("--state", required=True, help="folder for the per-epoch state a rerun resumes from")
    sub.add_argument("--epochs", type=int, help="override finetune.epochs")
    sub.add_argument("--split", type=int, default=1, choices=[1, 2, 3], help="official split trained and tested on")

    sub = command("features", cmd_features, "features of a frozen encoder on one split: pooled context per video "
                  "(dense windows averaged) and 18 block features per test video, as one .npz")
    encoder_arguments(sub, "names the encoder in the file",
                      "a pretrained checkpoint holding the view (cpc .pt or joint.pt); omit for random")
    sub.add_argument("--out", required=True, help="output features (.npz)")
    sub.add_argument("--split", type=int, default=1, choices=[1, 2, 3], help="official split (roles of the videos)")
    sub.add_argument("--batch-size", type=int, default=16, help="dense windows per forward pass")
    sub.add_argument("--threads", type=int, help="CPU threads")

    sub = command("retrieval", cmd_retrieval, "R@k of test videos querying train videos, per features file and "
                  "fused over each initialisation's views", dataset=False)
    sub.add_argument("features", nargs="+", help="features files (.npz) of `cocon features`")
    sub.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20, 50], help="k of R@k")
    sub.add_argument("--memory-mb", type=float, default=256,
                     help="working memory of the query chunks (analysis.memory_mb)")
    sub.add_argument("--json", required=True)
    sub.add_argument("--markdown", required=True)

    sub = command("probe", cmd_probe, "linear probe (logistic regression) on frozen features: top-1/top-5 on the "
                  "test split, C chosen by cross-validation over the train split", dataset=False)
    sub.add_argument("features", nargs="+", help="features files (.npz) of `cocon features`")
    sub.add_argument("--cs", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0], help="C values to choose from")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--json", required=True)
    sub.add_argument("--markdown", required=True)

    sub = command("analyse", cmd_analyse, "class consistency and the paper's figures (t-SNE, similarity histograms, "
                  "per-class gains, soft alignment, nearest neighbours, training curves) from features files")
    sub.add_argument("--features", required=True, nargs="+", help="features files (.npz) of one split")
    sub.add_argument("--manifest", required=True, help="the dataset's manifest.tsv (class names)")
    sub.add_argument("--views-dir", required=True, help="the views folder (frames of the neighbour figure)")
    sub.add_argument("--details", help="the split's finetune_details.json (per-class gains; omit to skip them)")
    sub.add_argument("--run", action="append", metavar="NAME=OUTPUT",
                     help="a training run whose curves to draw: 'pretrain NAME' or 'finetune NAME' = its output .pt")
    sub.add_argument("--figures", required=True, help="output folder of the figures and index.json")
    sub.add_argument("--consistency-json", required=True)
    sub.add_argument("--consistency-markdown", required=True)
    sub.add_argument("--threads", type=int, default=1)

    sub = command("report", cmd_report, "finetune.json, finetune.md and per-class details from test scores")
    sub.add_argument("--manifest", required=True, help="the dataset's manifest.tsv")
    sub.add_argument("--scores", required=True, action="append", metavar="INIT/VIEW=PATH",
                     help="test scores of one fine-tuned view, e.g. demo/cpc/rgb=results/demo/split1/finetune/"
                          "demo/cpc/rgb.scores.npz (INIT: random, <dataset>/cpc, <dataset>/<method>/<view set>)")
    sub.add_argument("--split", type=int, default=1, choices=[1, 2, 3], help="the split the scores are of")
    sub.add_argument("--json", required=True)
    sub.add_argument("--markdown", required=True)
    sub.add_argument("--details", required=True)

    sub = command("summarize", cmd_summarize, "finetune.json over splits: the mean and spread of split{k}/finetune.json",
                  dataset=False)
    sub.add_argument("results", nargs="+", help="the splits' finetune.json files")
    sub.add_argument("--json", required=True)
    sub.add_argument("--markdown", required=True)

    sub = command("paper", cmd_paper, "paper.json and paper.md from the fine-tuning scores under results/ "
                  "(run in the workflow's working directory)", dataset=False)
    sub.add_argument("--config", default="config/config.yaml", help="the workflow config naming the datasets")
    sub.add_argument("--name", required=True, help="the dataset whose paper.md it is, e.g. ucf101")
    sub.add_argument("--json", required=True)
    sub.add_argument("--markdown", required=True)

    sub = command("evidence", cmd_evidence, "the evidence summary of runs that differ in their training seeds: "
                  "mean, spread and paired CoCon - CPC differences of retrieval, the probe and the AUC, and the "
                  "loss terms' gradients on the rgb encoder")
    sub.add_argument("--views-dir", help="the views folder (the gradient check's clips; omit to skip it)")
    sub.add_argument("--manifest", help="the dataset's manifest.tsv (with --views-dir)")
    sub.add_argument("--run", required=True, action="append", metavar="SEED=FOLDER",
                     help="a seed's analysed split folder (with features/, analysis/, pretrain/), "
                          "e.g. 1=results/evidence_seed1/split1")
    sub.add_argument("--json", required=True)
    sub.add_argument("--markdown", required=True)

    sub = command("seeds", cmd_seeds, "mean and spread of several finetune.json that differ only in seeds",
                  dataset=False)
    sub.add_argument("results", nargs="+", help="finetune.json files")
    sub.add_argument("--out", required=True, help="output markdown")

    sub = command("show", cmd_show, "render a contact sheet PNG of one video from its view shards", dataset=False)
    sub.add_argument("--views", required=True, help="the views folder, e.g. results/ucf101/views")
    sub.add_argument("--manifest", required=True, help="the dataset's manifest.tsv (says which shard holds the video)")
    sub.add_argument("--video", required=True, help="video id, e.g. v_PushUps_g02_c03")
    sub.add_argument("--out", required=True, help="output PNG")
    sub.add_argument("--rows", type=int, default=6, help="frames shown")

    sub.add_argument("--beside", metavar="VIEWS", help="a second views folder of the same video (e.g. computed "
                     "views beside imported ones), drawn to the right at the same decoded frames")
    sub.add_argument("--beside-manifest", help="the manifest of --beside (default: manifest.tsv beside that folder)")
    sub.add_argument("--titles", nargs=2, metavar=("LEFT", "RIGHT"), help="titles of the two sheets (with --beside)")

    sub = command("import-views", cmd_import_views, "the manifest, rgb and flow view shards of a dataset whose "
                  "frames.import / flow.import name trees of existing frames and flow (mmaction2/denseflow, TSN, "
                  "two-stream, MemDPC, CoCLR LMDB), as the workflow's rules make them")
    sub.add_argument("--out", required=True, help="output folder: manifest.tsv, excluded.tsv, views/{rgb,flow}/")
    sub.add_argument("--threads", type=int, default=1, help="processes (videos probed and converted in parallel)")

    sub = command("inspect", cmd_inspect, "print a view shard's attributes and videos as JSON", dataset=False)
    sub.add_argument("shard", help="a view shard (.h5)")

    sub = command("verify", cmd_verify, "read every byte of view shards and check their checksums; exit 1 naming each "
                  "damaged shard, video and frame", dataset=False)
    sub.add_argument("paths", nargs="+", metavar="PATH",
                     help="a view shard (.h5), or a folder of them such as results/ucf101/views")
    sub.add_argument("--threads", type=int, default=1, help="shards checked in parallel")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cocon.logs import stage_logging

    try:
        with stage_logging(None):
            args.handler(args)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"cocon {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
