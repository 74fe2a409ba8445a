"""Write envs/cocon.yaml, the conda environment of every rule, from pyproject.toml.

    python envs/generate.py              # (make envs) rewrite envs/cocon.yaml
    python envs/generate.py --check      # exit 1 if envs/cocon.yaml is not what it would write
    python envs/generate.py --from-venv  # re-pin every dependency to this interpreter's version

pyproject.toml is the one list of dependencies. The environment file pins each of them
(name, extras and marker as pyproject.toml writes them) to one version and then installs
this checkout's cocon editable from ``${COCON_CHECKOUT}``, which the Snakefile sets to its
own folder and pip expands in requirements files. No line depends on where the file lies:
Snakemake copies it to .snakemake/conda/<hash>.yaml before conda reads it, and conda runs
pip from the copy's folder.

The file works as a lock file. A pin that still satisfies pyproject.toml is kept; a new
dependency, or one whose pin pyproject.toml no longer admits, is pinned to the version
installed in the interpreter that runs this script (the Makefile runs .venv's, after
reinstalling it from pyproject.toml), so a regeneration changes only what pyproject.toml
changed. Snakemake names the environment after the file's content, so a changed pin, or a
change of what pip builds from pyproject.toml (the digest line), makes a new environment.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
ENV_FILE = REPO / "envs" / "cocon.yaml"

# pip replaces ${NAME} (upper case, digits, _) in requirements files by the environment
# variable's value; conda writes the pip lines to such a file and leaves them untouched
CHECKOUT_VAR = "COCON_CHECKOUT"
CHECKOUT_LINE = f'-e "${{{CHECKOUT_VAR}}}"'  # quoted: pip shlex-splits options, a path may hold spaces
CHANNELS = ("conda-forge", "nodefaults")

HEADER = """\
# GENERATED from pyproject.toml by `make envs` (envs/generate.py): do not edit by hand.
# The one environment of every rule (`snakemake --use-conda`): Python, the dependencies of
# pyproject.toml pinned to versions tested together, and this checkout's cocon, installed
# editable from ${{{var}}}, which the Snakefile sets to its own folder (pip expands
# the variable; see docs/CONDA.md). No line depends on where this file lies: Snakemake
# hands conda a copy under .snakemake/conda/. Snakemake names the environment after this
# file's content, so a new pin or digest builds a new environment.
# pyproject.toml digest (build-system, project but optional-dependencies, tool.setuptools): {digest}
"""


class GenerateError(Exception):
    pass


def load_pyproject(path: Path = PYPROJECT) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def dependencies(pyproject: dict) -> list[Requirement]:
    return [Requirement(line) for line in pyproject["project"].get("dependencies", [])]


def digest(pyproject: dict) -> str:
    """What pip builds and installs from pyproject.toml in the environment: the build
    system, the project table (name, version, dependencies, scripts, ...) without the extras
    that the environment does not install, and setuptools' package discovery and data."""
    project = {k: v for k, v in pyproject["project"].items() if k != "optional-dependencies"}
    relevant = {
        "build-system": pyproject.get("build-system", {}),
        "project": project,
        "tool.setuptools": pyproject.get("tool", {}).get("setuptools", {}),
    }
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pin_line(req: Requirement, version: str) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    return f"{req.name}{extras}=={version}{marker}"


def read_env(text: str) -> tuple[str | None, dict[str, str], list[str]]:
    """(python version, {canonical name: pinned version}, the other pip lines) of an env file."""
    data = yaml.safe_load(text) or {}
    python = None
    pins: dict[str, str] = {}
    others: list[str] = []
    for dep in data.get("dependencies", []):
        if isinstance(dep, str) and dep.split("=")[0].strip() == "python" and "=" in dep:
            python = dep.split("=", 1)[1].lstrip("=")
        elif isinstance(dep, dict) and "pip" in dep:
            for line in dep["pip"]:
                try:
                    req = Requirement(line)
                except Exception:
                    others.append(line)
                    continue
                specs = list(req.specifier)
                if len(specs) == 1 and specs[0].operator == "==":
                    pins[canonicalize_name(req.name)] = specs[0].version
                else:
                    others.append(line)
    return python, pins, others


def installed_version(req: Requirement) -> str:
    try:
        version = Version(metadata.version(req.name))
    except metadata.PackageNotFoundError:
        raise GenerateError(
            f"{req.name} is not installed in {sys.executable}: install the project first "
            "(make envs does: pip install -e '.[test]'), or pin it in envs/cocon.yaml by hand "
            "if its marker excludes this machine"
        ) from None
    return version.public  # torch 2.x+cpu -> 2.x: the version on PyPI


def choose_pins(reqs: list[Requirement], old: dict[str, str], from_venv: bool) -> dict[str, str]:
    pins = {}
    for req in reqs:
        name = canonicalize_name(req.name)
        kept = old.get(name)
        if from_venv or kept is None or not req.specifier.contains(kept, prereleases=True):
            version = installed_version(req)
            if not req.specifier.contains(version, prereleases=True):
                raise GenerateError(
                    f"{req.name} {version} in {sys.executable} does not satisfy pyproject.toml's "
                    f"{req}: reinstall the project (pip install -e .) first"
                )
            pins[name] = version
        else:
            pins[name] = kept
    return pins


def render(pyproject: dict, pins: dict[str, str], python: str) -> str:
    requires = SpecifierSet(pyproject["project"].get("requires-python", ""))
    if not requires.contains(python):
        raise GenerateError(f"python={python} is outside requires-python {requires}")
    reqs = dependencies(pyproject)
    lines = [HEADER.format(var=CHECKOUT_VAR, digest=digest(pyproject)).rstrip("\n")]
    lines += ["channels:"] + [f"  - {c}" for c in CHANNELS]
    lines += ["dependencies:", f"  - python={python}", "  - pip", "  - pip:"]
    lines += [f"      - {pin_line(req, pins[canonicalize_name(req.name)])}" for req in reqs]
    lines += [f"      - {CHECKOUT_LINE}"]
    return "\n".join(lines) + "\n"


def generate(pyproject_path: Path = PYPROJECT, env_file: Path = ENV_FILE, from_venv: bool = False) -> str:
    """The text envs/cocon.yaml should have."""
    pyproject = load_pyproject(pyproject_path)
    old_python, old_pins = None, {}
    if env_file.exists() and not from_venv:
        old_python, old_pins, _ = read_env(env_file.read_text())
    python = old_python or f"{sys.version_info.major}.{sys.version_info.minor}"
    pins = choose_pins(dependencies(pyproject), old_pins, from_venv)
    return render(pyproject, pins, python)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the file differs")
    parser.add_argument("--from-venv", action="store_true",
                        help="pin every dependency (and python) to this interpreter's versions")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    parser.add_argument("--out", type=Path, default=ENV_FILE)
    args = parser.parse_args(argv)
    try:
        text = generate(args.pyproject, args.out, from_venv=args.from_venv)
    except GenerateError as e:
        print(f"envs/generate.py: {e}", file=sys.stderr)
        return 2
    current = args.out.read_text() if args.out.exists() else None
    if args.check:
        if current != text:
            print(f"{args.out} is out of date with {args.pyproject}: run `make envs`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(f"{args.out} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
