"""Config loading: YAML files validated against the schemas, with the schema defaults filled in."""
from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import jsonschema
import yaml


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


def load_dataset_config(path: str | os.PathLike, name: str | None = None) -> dict:
    """Read and validate one dataset config; ``name`` defaults to the file stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: dataset config file not found")
    config = _read_with_base(path, seen=())
    validate(config, load_schema("dataset.schema.yaml"), str(path))
    if config["layout"] == "kinetics400" and config["official_splits"] != [1]:
        raise ConfigError(f"{path}: official_splits: Kinetics-400 has one split (train/validate), [1]; "
                          f"got {config['official_splits']}")
    config["name"] = name or path.stem
    return config


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
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    base = config.pop("base", None)
    if base is None:
        return config
    return _merged(_read_with_base(path.parent / base, (*seen, path.resolve())), config)


def config_hash(config: dict) -> str:
    """A short hash that changes whenever any key of ``config`` changes."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
