"""Config loading: YAML files validated against the schemas, with the schema defaults filled in."""
from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from cocon.experiments import JOINT_METHODS


class ConfigError(ValueError):
    """A config file or key is invalid; the message names the file and the key."""


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, json.loads(json.dumps(subschema["default"])))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def load_schema(name: str) -> dict:
    return yaml.safe_load(resources.files("cocon.schemas").joinpath(name).read_text())


def validate(config: dict, schema: dict, source: str) -> dict:
    """Fill defaults into ``config`` in place and raise ConfigError naming ``source`` and the key."""
    errors = sorted(DefaultFillingValidator(schema).iter_errors(config), key=lambda error: list(error.path))
    if errors:
        lines = [f"{'.'.join(map(str, error.path)) or '(top level)'}: {error.message}" for error in errors]
        raise ConfigError(f"{source}: invalid config\n  " + "\n  ".join(lines))
    return config


def validate_workflow_config(config: dict, files, schema_path: str | os.PathLike) -> dict:
    """Fill defaults into the workflow config (config/config.yaml, or the --configfile
    files) and validate it against its schema, naming the files it was read from: Snakemake's
    own validation names neither them nor where a moved key went."""
    source = ", ".join(map(str, files)) or "the workflow config"
    if "views" in config:
        raise ConfigError(f"{source}: views: each dataset file sets its own views now "
                          "(config/datasets/<name>.yaml: views); remove the key here")
    return validate(config, yaml.safe_load(Path(schema_path).read_text()), source)


def load_dataset_config(path: str | os.PathLike, name: str | None = None) -> dict:
    """Read and validate one dataset config; ``name`` defaults to the file stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: dataset config file not found")
    config = _read_with_base(path, seen=())
    validate(config, load_schema("dataset.schema.yaml"), str(path))
    # an entry that is a path alone has only the path to say
    config["external"] = {name: {"path": entry} if isinstance(entry, str) else entry
                          for name, entry in config["external"].items()}
    check_consistency(config, str(path))
    config["name"] = name or path.stem
    return config


# what a dataset with views_from may set differently from the dataset whose views it reads
OWN_KEYS = {"name", "views_from", "seeds_of", "views", "official_splits", "pretrain", "finetune", "analysis", "paper",
            "external"}
# the sections in which the seed datasets of an evidence summary (seeds_of) may differ, by their seed only
SEEDED_SECTIONS = ("pretrain", "finetune", "analysis")


def _differing_keys(mine: dict, theirs: dict, allowed) -> list[str]:
    """The keys of either mapping, outside ``allowed``, whose values differ between them."""
    return sorted(key for key in set(mine) | set(theirs) if key not in allowed and mine.get(key) != theirs.get(key))


def check_views_from(name: str, datasets: dict[str, dict]) -> str | None:
    """What is wrong with dataset ``name``'s ``views_from`` (None if nothing): the dataset it
    names must exist, extract its own views, and list the same videos into the same views,
    so that every key outside training, fine-tuning and the analyses is the same."""
    source = datasets[name].get("views_from")
    if source is None:
        return None
    if source not in datasets:
        return f"views_from: {source!r} is not one of the datasets {sorted(datasets)}"
    if datasets[source].get("views_from"):
        return f"views_from: {source!r} reads the views of {datasets[source]['views_from']!r}; name that one"
    dataset, other = datasets[name], datasets[source]
    differing = _differing_keys(dataset, other, OWN_KEYS)
    if differing:
        return (f"views_from: {source!r}: {', '.join(differing)} differ from {source}'s, so its views are not this "
                "dataset's (only pretrain, finetune, analysis, paper, views and official_splits may differ)")
    missing = [view for view in dataset["views"] if view not in other["views"]]
    if missing:
        return f"views_from: {source!r} does not extract {', '.join(missing)} (its views: {other['views']})"
    return None


def check_seeds_of(name: str, datasets: dict[str, dict]) -> str | None:
    """What is wrong with dataset ``name``'s ``seeds_of`` (None if nothing): the dataset it
    names must exist, be in no other summary itself, read the same views, and differ from
    ``name`` in the seeds of pretrain, finetune and analysis only, so that the summary
    compares seeds."""
    summary = datasets[name].get("seeds_of")
    if summary is None:
        return None
    if summary == name or summary not in datasets:
        return f"seeds_of: {summary!r} is not one of the other datasets {sorted(set(datasets) - {name})}"
    if datasets[summary].get("seeds_of"):
        return f"seeds_of: {summary!r} is a seed of {datasets[summary]['seeds_of']!r} itself; name that one"
    dataset, other = datasets[name], datasets[summary]
    views_of = dataset.get("views_from") or name
    if views_of != (other.get("views_from") or summary):
        return (f"seeds_of: {summary!r} reads the views of {other.get('views_from') or summary!r}, this dataset "
                f"those of {views_of!r}: the seeds of a summary train on the same views (views_from)")
    for section in SEEDED_SECTIONS:
        differing = _differing_keys(dataset[section], other[section], {"seed"})
        if differing:
            return (f"seeds_of: {summary!r}: {section}: {', '.join(differing)} differ from {summary}'s; the seeds of "
                    "an evidence summary differ in their seeds only")
    return None


def _report(errors: list[str], source: str) -> None:
    if errors:
        raise ConfigError("\n".join(f"{source}: {error}" for error in errors))


def check_consistency(config: dict, source: str) -> None:
    """The constraints between keys that the schema cannot state, each of which would
    otherwise surface only inside a job (or never, as a silently wrong result)."""
    errors = []
    if config["layout"] == "kinetics400" and config["official_splits"] != [1]:
        errors.append(f"official_splits: Kinetics-400 has one split (train/validate), [1]; "
                      f"got {config['official_splits']}")
    pretrain = config["pretrain"]
    if pretrain["pred_steps"] >= pretrain["num_blocks"]:
        errors.append(f"pretrain.pred_steps: {pretrain['pred_steps']} must be less than pretrain.num_blocks "
                      f"({pretrain['num_blocks']}): the model predicts the last pred_steps blocks of a clip "
                      "from the blocks before them")
    if config["layout"] == "demo":
        from cocon.data.demo import CLASS_SETS

        demo = config["demo"]
        if demo["num_classes"] > len(CLASS_SETS[demo["classes"]]):
            errors.append(f"demo.num_classes: {demo['num_classes']}, but the {demo['classes']!r} class set has "
                          f"{len(CLASS_SETS[demo['classes']])} classes")
    analysed = config["analysis"]["split"]
    if analysed is not None and analysed not in config["official_splits"]:
        errors.append(f"analysis.split: split {analysed} is not one of official_splits {config['official_splits']}")
    pose = config["pose"]
    if pose["backend"] == "mmpose" and pose["people"] == "all" and not pose["mmpose"]["detector"]["config"]:
        errors.append("pose.mmpose.detector: required when pose.people is all (without a person detector "
                      "mmpose sees the whole frame as one person box)")
    methods = ["random", "cpc", *JOINT_METHODS]
    external = sorted(config.get("external", {}))
    for key, inits in (("finetune.inits", config["finetune"]["inits"]), ("analysis.inits", config["analysis"]["inits"])):
        for init in inits or []:
            if init not in methods and init not in external:
                errors.append(f"{key}: {init!r} is neither one of {methods} nor a name under `external` "
                              f"({', '.join(external) or 'none'})")
    for row, name in config["paper"]["released"].items():
        if name is not None and name not in external:
            errors.append(f"paper.released.{row}: {name!r} is not a name under `external` ({', '.join(external) or 'none'})")
    errors += _import_errors(config)
    weights = config["finetune"]["ensemble_weights"]
    if not any(weights[view] for view in config["views"]):
        errors.append(f"finetune.ensemble_weights: every view of `views` ({', '.join(config['views'])}) has "
                      "weight 0, so the ensemble would give every class the same score")
    _report(errors, source)


def _import_errors(config: dict) -> list[str]:
    """The bound of a flow import, where its layout fixes it or cannot hold it."""
    settings = config["flow"].get("import")
    if not settings or "bound" not in settings:
        return []
    from cocon.data.trees import DEFAULT_BOUND, FIXED_BOUND_LAYOUTS, MINMAX

    layout, bound = settings["layout"], settings["bound"]
    if layout in FIXED_BOUND_LAYOUTS and bound != DEFAULT_BOUND:
        return [f"flow.import.bound: {bound}: the {layout} layout's script quantises with a fixed bound of "
                f"{DEFAULT_BOUND}; remove the key"]
    if bound == MINMAX and layout != "twostream":
        return [f"flow.import.bound: minmax: only the twostream layout stores per-flow min-max flow (with its "
                f".bin files); {layout} trees have a fixed bound (a number)"]
    return []


def stored_short_side(config: dict, view: str) -> tuple[int, str]:
    """The short side a view's frames are stored at, and the key that sets it."""
    if view == "rgb":
        return config["frames"]["short_side"], "frames.short_side"
    if view == "flow" and config["flow"]["short_side"] is None:
        # flow.short_side null stores flow at the frames' size
        return config["frames"]["short_side"], "frames.short_side"
    return config[view]["short_side"], f"{view}.short_side"


def check_training_inputs(config: dict, views, source: str, sizes: dict | None = None) -> None:
    """Before training on ``views``: each view's crop fits in the frames it is cut from.

    A crop larger than the stored frames would run, but every clip would be upsampled from
    fewer pixels than the network reads. Checked only where training is planned, so that a
    config that extracts views for other uses may store them small. ``sizes``: view ->
    (crop size, what sets it) where a checkpoint's own config sets it (None: the dataset's
    pretrain.input_size)."""
    errors = []
    for view in views:
        given = (sizes or {}).get(view)
        size, what = given or (config["pretrain"]["input_size"][view], f"pretrain.input_size.{view}")
        side, key = stored_short_side(config, view)
        if size > side:
            remedy = f"lower {what} or raise {key}" if given is None else f"raise {key} to at least {size}"
            errors.append(f"{what}: {size} px is larger than the {side} px short side {view} is stored at "
                          f"({key}), so every clip would be upsampled; {remedy}")
    _report(errors, source)


def read_yaml(path: str | os.PathLike):
    """The YAML document in ``path``. A syntax error names the file and the line: PyYAML
    alone names "<unicode string>" when given the text rather than the file."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def _merged(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _read_with_base(path: Path, seen: tuple) -> dict:
    """A dataset file's keys over those of the file its ``base`` key names (relative to it)."""
    if not path.is_file():
        raise ConfigError(f"{path}: dataset config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base files form a cycle")
    config = read_yaml(path) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    base = config.pop("base", None)
    if base is None:
        return config
    return _merged(_read_with_base(path.parent / base, (*seen, path.resolve())), config)


def config_hash(config: dict) -> str:
    """A short hash that changes whenever any key of ``config`` changes."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
