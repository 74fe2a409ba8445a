# Dataset configs, shard planning and the input functions shared by the rules.
# The experiment matrix (splits, initialisations, view sets, the paper's tables) is
# cocon.experiments; this file only turns it into paths.
import sys
from functools import cache
from pathlib import Path

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from cocon.config import check_seeds_of, check_training_inputs, check_views_from, load_dataset_config
from cocon.data.datasets import DatasetError, assign_shards, check_alignment_pairs, check_training_split, list_videos
from cocon.data.trees import series_inputs
from cocon.experiments import (EXTERNAL, INIT_PATTERN, VIEW_SET_PATTERN, ExperimentError, analysis_inits,
                               analysis_split, external_entry, external_path, finetune_inits, paper_cells, parse_init,
                               pretrained_path, pretraining_split, view_set_name)
from cocon.train.import_checkpoint import CheckpointError, checkpoint_model_config
from cocon.guidance import conda_missing, datasets_needed, missing_locations, setup_paragraph
from cocon.views.pose import backend_files

DATASETS = {name: load_dataset_config(path, name) for name, path in config["datasets"].items()}

if EXTERNAL in DATASETS:
    raise ValueError(f"datasets: {EXTERNAL!r} names the released checkpoints of initialisations "
                     f"({EXTERNAL}/<name>): call the dataset otherwise")
for _name, _dataset in DATASETS.items():
    _error = check_views_from(_name, DATASETS) or check_seeds_of(_name, DATASETS)
    if _error:
        raise ValueError(f"{config['datasets'][_name]}: {_error}")
    _videos_of = _dataset["views_from"] or _name
    if _dataset["layout"] == "demo" and Path(_dataset["root"]) != Path(f"results/{_videos_of}/videos"):
        raise ValueError(f"{config['datasets'][_name]}: root: a demo dataset is generated into "
                         f"results/{_videos_of}/videos")
    _source = _dataset["finetune"]["pretrained_on"]
    if _source is not None and _source not in DATASETS:
        raise ValueError(f"{config['datasets'][_name]}: finetune.pretrained_on: {_source!r} "
                         f"is not one of the datasets {sorted(DATASETS)}")
for _target in config["targets"]:
    if _target not in DATASETS:
        raise ValueError(f"targets: {_target!r} is not one of the datasets {sorted(DATASETS)}")

# a first run on placeholder paths gets one paragraph, not a traceback from inside the DAG
for _name in datasets_needed(sys.argv[1:], config["targets"], DATASETS):
    _missing = missing_locations(DATASETS[_name])
    if _missing:
        sys.exit(setup_paragraph(_name, config["datasets"][_name], _missing,
                                 "snakemake " + " ".join(arg for arg in sys.argv[1:] if "'" not in arg)))
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method and not workflow.output_settings.dryrun:
    _conda = conda_missing(workflow.deployment_settings.conda_frontend)
    if _conda:
        sys.exit(_conda)


wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d{5}",
    split=r"[123]",
    view="rgb|flow|pose|seg",
    method=r"cocon|cpc\+sim|cpc\+sync",
    view_set=VIEW_SET_PATTERN,
    init=INIT_PATTERN,
    name=r"[A-Za-z0-9_-]+",


@cache
def listed_videos(dataset):
    """A dataset's videos, listed once: a folder, split file or key that is wrong stops
    planning here, naming the dataset file and the key."""
    try:
        return list_videos(DATASETS[dataset])
    except DatasetError as error:
        raise ValueError(f"{config_file(dataset)}: {error}") from None


@cache
def shards(dataset):
    """Shard names of a dataset, planned from its split files or folders without opening a video."""
    return sorted(shard_members(dataset))


@cache
def shard_members(dataset):
    """Shard name -> its listed videos."""
    return assign_shards(listed_videos(dataset), DATASETS[dataset]["shard_size"])


def import_inputs(dataset, shard, section):
    """The folders (files for an LMDB) of a shard's videos in the ``frames.import`` or
    ``flow.import`` tree: the frames or flow rule's inputs, so that a tree whose folders
    change reruns the shards that read them. None without an import."""
    settings = DATASETS[dataset][section]["import"]
    if not settings:
        return []
    return sorted({path for entry in shard_members(dataset).get(shard, [])
                   for path in series_inputs(settings, section, entry.video_id, entry.label)})


def manifest_params(dataset):
    """The manifest's params: the listing keys, and the import trees it probes where set
    (only then, so that a dataset without imports keeps its params and reruns nothing)."""
    params = dataset_params(dataset)
    for section in ("frames", "flow"):
        if DATASETS[dataset][section]["import"]:
            params[section] = {"import": DATASETS[dataset][section]["import"]}
    return params


@cache
def check_training(dataset, split, stage, views, init=None):
    """A training job's split and crops, checked at planning: a split without a batch of
    train videos or (to fine-tune) a test video, or a crop larger than the stored frames,
    would otherwise fail, or quietly degrade, inside the job. Fine-tuning from a checkpoint
    crops at the size the checkpoint's encoder was trained at (``init_input_size``)."""
    try:
        check_training_split(DATASETS[dataset], listed_videos(dataset), int(split), stage)
    except DatasetError as error:
        raise ValueError(f"{config_file(dataset)}: {error}") from None
    sizes = {view: init_input_size(dataset, split, init, view) for view in views} if init else None
    check_training_inputs(DATASETS[dataset], views, config_file(dataset), sizes)


@cache
def external_config(dataset, name):
    """The model config of ``dataset``'s external checkpoint ``name``, read from the file at
    planning: what its entry states and the file contradicts (a ResNet34 named resnet18,
    normalize true against a DPC file, an input size other than the encoder's) stops here,
    before any job runs, naming both values."""
    entries = DATASETS[dataset]["external"]
    if name not in entries:
        raise ValueError(f"{config_file(dataset)}: external: no checkpoint named {name!r} "
                         f"(external: {sorted(entries) or 'none'})")
    entry = external_entry(DATASETS[dataset], name)
    try:
        return checkpoint_model_config(entry["path"], import_options(dataset, name))
    except CheckpointError as error:
        raise ValueError(f"{config_file(dataset)}: external.{name}: {error}") from None


def import_options(dataset, name):
    """What an external entry states about its checkpoint (all but its path and label)."""
    entry = external_entry(DATASETS[dataset], name)
    return {key: value for key, value in entry.items() if key not in ("path", "label")}


def init_input_size(dataset, split, init_name, view):
    """(crop size, what sets it) of a fine-tuning of ``view`` from ``init_name``: the size its
    checkpoint's encoder was trained at (the checkpoint's config, which fine-tuning builds
    the model from), or for random the dataset's own pretrain.input_size."""
    init = parse_init(init_name)
    if init.method == "random":
        return None
    if init.method == EXTERNAL:
        size = external_config(dataset, init.source)["input_size"]
        return size, f"external.{init.source} (its encoder's input_size {size})"
    size = DATASETS[init.source]["pretrain"]["input_size"][view]
    return size, f"the {init_name} encoder ({init.source}'s pretrain.input_size.{view} {size})"


# keys that only say which runs to build: no stage's output depends on them
# (an external checkpoint's entry reaches only its import job, whose output fine-tuning reads)
PLANNING_KEYS = {"official_splits", "views", "paper", "external", "seeds_of"}
STAGE_SECTIONS = {"frames", "flow", "pose", "seg", "pretrain", "finetune", "analysis"}


def training_resources(stage):
    """Resources of a training job (stage pretrain or finetune): memory and time per dataset,
    the GPUs and CPUs of each node, and its SLURM geometry (README: On a cluster).

    The job's script starts its own job step (cocon.train.launch: srun, one task per node),
    so that SLURM's time-limit warning reaches training and not Snakemake: an ``mpi``
    resource tells the SLURM plugin so (its jobstep then runs Snakemake in the batch step
    without an srun of its own). Empty on one node, where the plugin's MPI checks (at least
    two tasks) do not apply. Several nodes get one task per node (``tasks``, and
    ``tasks_per_gpu: 0``, else the plugin would ask --ntasks-per-gpu) and their GPUs as
    per-node GRES (--gpus counts the whole job's)."""

    def settings(wildcards):
        return DATASETS[wildcards.dataset][stage]

    def sizes(wildcards):
        return config["resources"][stage].get(wildcards.dataset, config["resources"][stage])

    return dict(
        mem_mb=lambda wildcards: sizes(wildcards)["mem_mb"],
        runtime=lambda wildcards: sizes(wildcards)["runtime"],
        gpu=lambda wildcards: settings(wildcards)["gpus"] if settings(wildcards)["nodes"] == 1 else 0,
        gres=lambda wildcards: f"gpu:{settings(wildcards)['gpus']}"
        if settings(wildcards)["nodes"] > 1 and settings(wildcards)["gpus"] else "",
        # one task per node: its gpus, and a CPU per training process (one per GPU) and per data loader
        cpus_per_task=lambda wildcards, threads: max(threads, settings(wildcards)["gpus"] * (settings(wildcards)["workers"] + 1)),
        nodes=lambda wildcards: settings(wildcards)["nodes"],
        tasks=lambda wildcards: settings(wildcards)["nodes"],
        tasks_per_gpu=0,
        mpi=lambda wildcards: "srun" if settings(wildcards)["nodes"] > 1 else "",
    )


def dataset_params(dataset, *sections):
    """The keys of a dataset config that a stage depends on: the listing keys, plus ``sections``.

    Passing only these as params keeps Snakemake's params rerun trigger precise: a change
    to the flow settings reruns flow, not the manifest or the frames, and adding a split
    or a view reruns nothing that exists.
    """
    # every job of a dataset passes here: its folders and split files are checked before any job runs
    listed_videos(dataset)
    ds = DATASETS[dataset]
    params = {key: value for key, value in ds.items()
              if key not in PLANNING_KEYS and (key not in STAGE_SECTIONS or key in sections)}
    # an import that is not set is left out, so that results made before the key existed are not rerun
    for section in ("frames", "flow"):
        if section in params and params[section].get("import") is None:
            params[section] = {key: value for key, value in params[section].items() if key != "import"}
    return params


def config_file(dataset):
    return config["datasets"][dataset]


def check_view(dataset, view):
    if view not in DATASETS[dataset]["views"]:
        raise ValueError(f"{config_file(dataset)}: views: {view!r} is not extracted for {dataset} "
                         f"(views: {DATASETS[dataset]['views']})")


def check_split(dataset, split):
    if int(split) not in DATASETS[dataset]["official_splits"]:
        raise ValueError(f"{config_file(dataset)}: official_splits: split {split} is not configured "
                         f"(official_splits: {DATASETS[dataset]['official_splits']})")


def model_files(dataset, view):
    """Model files of an mm backend, as inputs: checked at planning, and a new checkpoint reruns the view."""
    return backend_files(DATASETS[dataset][view], f"{config_file(dataset)}: {view}")


def view_shard_paths(dataset, views):
    for view in views:
        check_view(dataset, view)
    return [path for view in views for path in _view_shard_paths(dataset, view)]


@cache
def _view_shard_paths(dataset, view):
    # planned once per (dataset, view): at UCF101 scale every training job asks for them
    return [f"{views_folder(dataset)}/{view}/{shard}.h5" for shard in shards(dataset)]


def views_source(dataset):
    """The dataset whose manifest and view shards ``dataset`` trains on: its own, or those of
    ``views_from`` (the same videos and views, e.g. for other training seeds)."""
    return DATASETS[dataset]["views_from"] or dataset


def manifest_path(dataset):
    return f"results/{views_source(dataset)}/manifest.tsv"


def views_folder(dataset):
    return f"results/{views_source(dataset)}/views"


def view_shards(wildcards):
    return view_shard_paths(wildcards.dataset, DATASETS[wildcards.dataset]["views"])


def demo_videos(wildcards):
    if DATASETS[wildcards.dataset]["layout"] == "demo":
        return f"results/{wildcards.dataset}/videos"
    return []


def cpc_inputs(wildcards):
    check_split(wildcards.dataset, wildcards.split)
    paths = view_shard_paths(wildcards.dataset, [wildcards.view])
    check_training(wildcards.dataset, wildcards.split, "pretrain", (wildcards.view,))
    return paths


def joint_views(wildcards):
    return wildcards.view_set.split("+")


def joint_inputs(wildcards):
    """The view shards and the per-view CPC checkpoints a joint pretraining starts from."""
    views = joint_views(wildcards)
    if view_set_name(views) != wildcards.view_set:
        raise ValueError(f"view set {wildcards.view_set!r}: write it {view_set_name(views)!r} "
                         "(views in the order rgb+flow+pose+seg)")
    check_split(wildcards.dataset, wildcards.split)
    paths = view_shard_paths(wildcards.dataset, views)
    check_training(wildcards.dataset, wildcards.split, "pretrain", tuple(views))
    return {"shards": paths,
            "init": expand("results/{dataset}/split{split}/pretrain/cpc/{view}.pt", dataset=wildcards.dataset,
                           split=wildcards.split, view=views)}


def _pretrained(dataset, split, init_name, view):
    init = parse_init(init_name)
    if init.method == EXTERNAL:
        config = external_config(dataset, init.source)
        if config["view"] != view:
            raise ValueError(f"{config_file(dataset)}: external.{init.source}: its encoder reads {config['view']}, "
                             f"not {view}")
        check_view(dataset, view)
        return external_path(dataset, init.source)
    if init.source is not None:
        if init.source not in DATASETS:
            raise ValueError(f"{init_name}: {init.source!r} is not one of the datasets {sorted(DATASETS)}")
        check_view(init.source, view)
    if not init.provides(view):
        raise ValueError(f"{init_name}: its view set has no {view} encoder")
    source_split = pretraining_split(init, dataset, int(split), DATASETS) if init.source else None
    return pretrained_path(init, source_split, view)


def finetune_inputs(wildcards):
    check_split(wildcards.dataset, wildcards.split)
    path = _pretrained(wildcards.dataset, wildcards.split, wildcards.init, wildcards.view)
    check_training(wildcards.dataset, wildcards.split, "finetune", (wildcards.view,), wildcards.init)
    return {"shards": view_shard_paths(wildcards.dataset, [wildcards.view]), "pretrained": [path] if path else []}


def finetune_entries(dataset, split):
    """(init, view) -> the fine-tuned test scores and the pretrained model they started from,
    for the rows of results/{dataset}/split{split}/finetune.json."""
    entries = {}
    for init in finetune_inits(DATASETS[dataset]):
        for view in DATASETS[dataset]["views"]:
            if init.provides(view):
                entries[(init.name, view)] = {
                    "scores": f"results/{dataset}/split{split}/finetune/{init.name}/{view}.scores.npz",
                    "checkpoint": _pretrained(dataset, split, init.name, view)}
                if init.method == EXTERNAL:
                    entry = external_entry(DATASETS[dataset], init.source)
                    entries[(init.name, view)]["external"] = {
                        "name": init.source, "path": entry["path"], "label": entry.get("label"),
                        "format": external_config(dataset, init.source)["format"]}
    return entries


def external_source(wildcards):
    """The file an external entry names, checked against what the entry says at planning."""
    external_config(wildcards.dataset, wildcards.name)
    return external_entry(DATASETS[wildcards.dataset], wildcards.name)["path"]


def split_finetune_scores(wildcards):
    check_split(wildcards.dataset, wildcards.split)
    return [entry["scores"] for entry in finetune_entries(wildcards.dataset, wildcards.split).values()]


def split_reports(wildcards):
    return expand("results/{dataset}/split{split}/finetune.json", dataset=wildcards.dataset,
                  split=DATASETS[wildcards.dataset]["official_splits"])


@cache
def cells(dataset):
    try:
        return paper_cells(dataset, DATASETS)
    except ExperimentError as error:
        raise ValueError(f"{config_file(dataset)}: {error}") from error


def paper_scores(wildcards):
    for cell in cells(wildcards.dataset):
        # a cell whose pretraining cannot exist (a view its source does not extract) fails
        # here, at planning, naming the dataset file and key, not in a job
        for split in cell.splits:
            for view in cell.ensemble_views or (cell.view,):
                _pretrained(cell.dataset, split, cell.init, view)
    return sorted({path for cell in cells(wildcards.dataset) if cell.run for path in cell.scores()})


def paper_manifests(wildcards):
    return sorted({manifest_path(cell.dataset) for cell in cells(wildcards.dataset) if cell.run})


def features_inputs(wildcards):
    """The view's shards and the pretrained checkpoint; unlike fine-tuning, the features
    stage needs no batch of train videos (retrieval and the probe name what they lack)."""
    check_split(wildcards.dataset, wildcards.split)
    path = _pretrained(wildcards.dataset, wildcards.split, wildcards.init, wildcards.view)
    return {"shards": view_shard_paths(wildcards.dataset, [wildcards.view]), "pretrained": [path] if path else []}


def analysed_features(dataset, split):
    """(init, view) -> the features file of every analysed initialisation and view."""
    return {(init.name, view): f"results/{dataset}/split{split}/features/{init.name}/{view}.npz"
            for init in analysis_inits(DATASETS[dataset]) for view in DATASETS[dataset]["views"]
            if init.provides(view)}


def check_analysis_split(wildcards):
    expected = analysis_split(DATASETS[wildcards.dataset])
    if int(wildcards.split) != expected:
        raise ValueError(f"{config_file(wildcards.dataset)}: analysis.split: the analyses run on split {expected}, "
                         f"not split {wildcards.split}")
    check_split(wildcards.dataset, wildcards.split)


def analysis_features(wildcards):
    check_analysis_split(wildcards)
    return sorted(analysed_features(wildcards.dataset, wildcards.split).values())


def training_runs(dataset, split):
    """Run name -> the output of every pretraining and fine-tuning whose curves the report
    draws: the analysed initialisations' pretrainings and the split's fine-tunings."""
    runs = {}
    for init in analysis_inits(DATASETS[dataset]):
        for view in DATASETS[dataset]["views"]:
            path = _pretrained(dataset, split, init.name, view) if init.provides(view) else None
            if path:
                runs[f"pretrain {init.name}" if init.views else f"pretrain {init.name} {view}"] = path
    finetuned = {key: entry["scores"] for key, entry in finetune_entries(dataset, split).items()}
    # and the runs of the paper's tables on this dataset and split (e.g. Table 5's 2-view CoCon)
    for cell in cells(dataset):
        if cell.run and cell.dataset == dataset and int(split) in cell.splits:
            for view in cell.ensemble_views or (cell.view,):
                finetuned[(cell.init, view)] = f"results/{dataset}/split{split}/finetune/{cell.init}/{view}.scores.npz"
    for (init, view), scores in finetuned.items():
        runs[f"finetune {init} {view}"] = scores.removesuffix(".scores.npz") + ".pt"
        path = _pretrained(dataset, split, init, view)
        if path:
            runs.setdefault(f"pretrain {init}" if parse_init(init).views else f"pretrain {init} {view}", path)
    return runs


def analyse_inputs(wildcards):
    check_analysis_split(wildcards)
    dataset = DATASETS[wildcards.dataset]
    try:
        check_alignment_pairs(dataset, listed_videos(wildcards.dataset), int(wildcards.split))
    except DatasetError as error:
        raise ValueError(f"{config_file(wildcards.dataset)}: {error}") from None
    return {"features": analysis_features(wildcards),
            "details": f"results/{wildcards.dataset}/split{wildcards.split}/finetune_details.json",
            "frames": view_shard_paths(wildcards.dataset, ["rgb"] if "rgb" in dataset["views"] else []),
            "runs": sorted(set(training_runs(wildcards.dataset, wildcards.split).values()))}


def report_inputs(wildcards):
    split = analysis_split(DATASETS[wildcards.dataset])
    analysis = f"results/{wildcards.dataset}/split{split}/analysis"
    return {"paper": f"results/{wildcards.dataset}/paper.md",
            "finetune": f"results/{wildcards.dataset}/finetune.md",
            "retrieval": f"{analysis}/retrieval.md",
            "probe": f"{analysis}/probe.md",
            "consistency": f"{analysis}/consistency.md",
            "figures": f"{analysis}/figures",
            "manifest": manifest_path(wildcards.dataset),
            "views": f"results/{views_source(wildcards.dataset)}/views.tsv",
            "shards": view_shards(wildcards)}


def seed_datasets(dataset):
    """``dataset`` and the datasets that name it in ``seeds_of`` (checked when the config is
    loaded: the same views, other seeds only): the runs its evidence summary compares."""
    return [dataset] + [name for name, other in DATASETS.items() if other["seeds_of"] == dataset]


def evidence_runs(dataset):
    """Per seed dataset, the files cocon.evidence.SeedRun reads."""
    runs = []
    for name in seed_datasets(dataset):
        split = analysis_split(DATASETS[name])
        analysis = f"results/{name}/split{split}/analysis"
        joint = {init.name: str(Path(pretrained_path(init, split, init.views[0])).with_suffix(".state") / "metrics.csv")
                 for init in analysis_inits(DATASETS[name]) if init.views}
        cocon = [init for init in analysis_inits(DATASETS[name]) if init.method == "cocon" and init.views == ("rgb", "flow")]
        runs.append({"dataset": name, "retrieval": f"{analysis}/retrieval.json", "probe": f"{analysis}/probe.json",
                     "features": analysed_features(name, split), "runs": joint,
                     "cpc": {view: f"results/{name}/split{split}/pretrain/cpc/{view}.pt" for view in ("rgb", "flow")}
                     if cocon else {},
                     "joint": pretrained_path(cocon[0], split, "rgb") if cocon else None})
    return runs


def evidence_inputs(wildcards):
    runs = evidence_runs(wildcards.dataset)
    pretrained = [path for run in runs for path in (*run["cpc"].values(), run["joint"]) if path]
    return {"analyses": [path for run in runs for path in (run["retrieval"], run["probe"])],
            "features": [path for run in runs for path in run["features"].values()],
            "pretrained": pretrained}


def all_targets():
    return expand("results/{dataset}/{target}", dataset=config["targets"],
                  target=["finetune.json", "paper.md", "report.html"])
