# Dataset configs, shard planning and the input functions shared by the rules.
from functools import cache
from pathlib import Path

from cocon.config import load_dataset_config
from cocon.data.datasets import assign_shards, list_videos
from cocon.views.pose import backend_files

DATASETS = {name: load_dataset_config(path, name) for name, path in config["datasets"].items()}

for _name, _dataset in DATASETS.items():
    if _dataset["layout"] == "demo" and Path(_dataset["root"]) != Path(f"results/{_name}/videos"):
        raise ValueError(f"{config['datasets'][_name]}: root: a demo dataset is generated into results/{_name}/videos")
for _target in config["targets"]:
    if _target not in DATASETS:
        raise ValueError(f"targets: {_target!r} is not one of the datasets {sorted(DATASETS)}")

VIEWS = config["views"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d{5}",
    view="|".join(VIEWS),
    method=r"cocon|cpc\+sim|cpc\+sync",
    init=r"random|cpc|cocon|cpc\+sim|cpc\+sync",


@cache
def shards(dataset):
    """Shard names of a dataset, planned from its split files or folders without opening a video."""
    ds = DATASETS[dataset]
    return sorted(assign_shards(list_videos(ds), ds["shard_size"]))


def dataset_params(dataset, *sections):
    """The keys of a dataset config that a stage depends on: the listing keys, plus ``sections``.

    Passing only these as params keeps Snakemake's params rerun trigger precise: a change
    to the flow settings reruns flow, not the manifest or the frames.
    """
    stage_sections = {"frames", "flow", "pose", "seg", "pretrain", "finetune", "split"}
    ds = DATASETS[dataset]
    return {key: value for key, value in ds.items() if key not in stage_sections or key in sections}


def model_files(dataset, view):
    """Model files of an mm backend, as inputs: checked at planning, and a new checkpoint reruns the view."""
    return backend_files(DATASETS[dataset][view], f"{config['datasets'][dataset]}: {view}")


def view_shard_paths(dataset, views):
    return expand("results/{dataset}/views/{view}/{shard}.h5", dataset=dataset, view=views, shard=shards(dataset))


def view_shards(wildcards):
    return view_shard_paths(wildcards.dataset, VIEWS)


def demo_videos(wildcards):
    if DATASETS[wildcards.dataset]["layout"] == "demo":
        return f"results/{wildcards.dataset}/videos"
    return []


def pretrained_path(dataset, init, view):
    """The pretrained view model fine-tuning starts from (None for random), possibly of
    another dataset: finetune.pretrained_on (the paper's Table 2)."""
    if init == "random":
        return None
    source = DATASETS[dataset]["finetune"]["pretrained_on"] or dataset
    if source not in DATASETS:
        raise ValueError(f"{config['datasets'][dataset]}: finetune.pretrained_on: {source!r} "
                         f"is not one of the datasets {sorted(DATASETS)}")
    return f"results/{source}/pretrain/{init}/{view}.pt"


def pretrained_input(wildcards):
    path = pretrained_path(wildcards.dataset, wildcards.init, wildcards.view)
    return [path] if path else []


def finetune_entries(wildcards):
    """(init, view) -> the fine-tuned test scores and the pretrained model they started from."""
    return {
        (init, view): {"scores": f"results/{wildcards.dataset}/finetune/{init}/{view}.scores.npz",
                       "checkpoint": pretrained_path(wildcards.dataset, init, view)}
        for init in DATASETS[wildcards.dataset]["finetune"]["inits"]
        for view in VIEWS
    }


def finetune_scores(wildcards):
    return [entry["scores"] for entry in finetune_entries(wildcards).values()]


def all_targets():
    return expand("results/{dataset}/finetune.json", dataset=config["targets"])
