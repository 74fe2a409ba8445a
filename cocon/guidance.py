"""What a first run needs, said before any job: the dataset files a target needs, where
their folders are missing, and how to point the workflow at a dataset without editing
tracked files; and what to do when --use-conda finds no conda."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

WHAT = {
    "root": "the folder holding the class folders of videos",
    "splits": "the folder of the official split files",
    "annotations": "the Kinetics annotation CSVs",
    "frames.import.root": "the tree of frames to import",
    "flow.import.root": "the tree of flow to import",
}
TARGET = re.compile(r"^(?:\./)?results/([^/]+)/(.*)$")


def datasets_needed(arguments: list[str], default_targets: list[str], datasets: dict[str, dict]) -> list[str]:
    """The datasets the targets among the command-line ``arguments`` build on: each target's
    own dataset, the dataset it fine-tunes encoders of, and for paper.md the datasets of its
    HMDB51 columns and Kinetics-400 rows. No target: the config's default targets."""
    requested = []
    for argument in arguments:
        match = TARGET.match(argument)
        if match and match.group(1) in datasets:
            requested.append((match.group(1), match.group(2)))
    if not requested:
        requested = [(name, "paper.md") for name in default_targets]
    needed: list[str] = []

    def need(name: str | None) -> None:
        if name is None or name in needed or name not in datasets:
            return
        needed.append(name)
        need(datasets[name]["finetune"]["pretrained_on"])

    for name, rest in requested:
        need(name)
        if rest.startswith("paper."):
            need(datasets[name]["paper"]["hmdb51"])
            need(datasets[name]["paper"]["kinetics400"])
    return needed


def missing_locations(dataset: dict) -> list[tuple[str, str]]:
    """(key, path) of each folder or file the dataset config names that is not there."""
    if dataset["layout"] == "demo":
        return []
    missing = []
    imported = {section: dataset[section]["import"] for section in ("frames", "flow")
                if dataset.get(section, {}).get("import")}
    if (dataset.get("root") or "frames" not in imported) and not Path(dataset["root"]).is_dir():
        missing.append(("root", dataset["root"]))
    for section, settings in imported.items():
        if not Path(settings["root"]).exists():
            missing.append((f"{section}.import.root", settings["root"]))
    if dataset["layout"] in ("ucf101", "hmdb51") and not Path(dataset["splits"]).is_dir():
        missing.append(("splits", dataset["splits"]))
    for path in dataset.get("annotations") or []:
        if not Path(path).is_file():
            missing.append(("annotations", path))
    return missing


def setup_paragraph(name: str, config_file: str, missing: list[tuple[str, str]], command: str) -> str:
    """One paragraph: which dataset, which file and keys to set, and how to pass them
    without editing tracked files."""
    keys = "\n".join(f"  {key}: {path}   <- {WHAT[key]}, not found" for key, path in missing)
    own = f"my_{name}.yaml"
    lines = "\\n".join([f"base: {config_file}"] + [_yaml_line(key) for key in dict(missing)])
    return (f"The dataset {name!r} is not where {config_file} says:\n{keys}\n"
            f"Set these keys in {config_file}, or leave tracked files alone and write a dataset file "
            f"of your own that starts from it, then name it on the command line:\n"
            f"  printf '{lines}\\n' > {own}\n"
            f"  {command} --config 'datasets={{{name}: {own}}}'")


def _yaml_line(key: str) -> str:
    """``key: /your/key`` as one YAML line, dotted keys as nested flow mappings."""
    *sections, last = key.split(".")
    line = f"{last}: /your/{key}"
    for section in reversed(sections):
        line = f"{section}: {{{line}}}"
    return line


def conda_missing(frontend: str) -> str | None:
    """The one line for --use-conda without conda, or None when it is on PATH."""
    if shutil.which(frontend):
        return None
    return (f"--use-conda: {frontend} is not on PATH. Install conda (24.7.1 or later), or drop --use-conda "
            "and run in the project's venv (`make demo` sets it up; then .venv/bin/snakemake ...).")
