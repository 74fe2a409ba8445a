"""envs/cocon.yaml: generated from pyproject.toml, and buildable from the copy Snakemake hands conda.

No conda channel can be reached from the test machines, so a fake ``conda`` on PATH is where
these tests stop: the real ``snakemake --use-conda --conda-create-envs-only`` runs the real
Snakefile up to its ``conda env create --file <copy>`` call, the fake records that call (its
arguments, the copy, the environment Snakemake gave it) and answers success. The pip part
of the environment is then resolved the way conda's pip installer runs it: the pip lines
written to a requirements file in the copy's folder, ``pip install -U -r`` with that folder
as working directory, here as a dry run against the packages pip can reach."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO, SNAKEMAKE, workflow_config

_spec = importlib.util.spec_from_file_location("cocon_envs_generate", REPO / "envs" / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

ENV_FILE = REPO / "envs" / "cocon.yaml"

FAKE_CONDA = textwrap.dedent('''\
    #!{python}
    """A stand-in for conda: records each call in $FAKE_CONDA_LOG and answers success."""
    import json, os, sys
    from pathlib import Path

    args = sys.argv[1:]
    record = {{"args": args, "cwd": os.getcwd(), "COCON_CHECKOUT": os.environ.get("COCON_CHECKOUT")}}
    if args[:1] == ["--version"]:
        print("conda 26.7.1")
    elif args[:2] == ["info", "--json"]:
        print(json.dumps({{"conda_prefix": os.environ["FAKE_CONDA_ROOT"], "platform": "linux-64",
                          "conda_version": "26.7.1"}}))
    elif args[:2] == ["config", "--get"]:
        print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
    elif args[:2] == ["env", "create"]:
        env_file = Path(args[args.index("--file") + 1])
        prefix = Path(args[args.index("--prefix") + 1])
        record.update(file=str(env_file), prefix=str(prefix), content=env_file.read_text(),
                      folder_writable=os.access(env_file.parent, os.W_OK))
        prefix.mkdir(parents=True)
    elif args[:1] == ["clean"]:  # Snakemake's --conda-cleanup-pkgs (default: tarballs)
        pass
    else:
        record["unexpected"] = True
    with open(os.environ["FAKE_CONDA_LOG"], "a") as log:
        log.write(json.dumps(record) + "\\n")
''')


def pip_lines(env_text: str) -> list[str]:
    for dep in yaml.safe_load(env_text)["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return list(dep["pip"])
    raise AssertionError("the environment has no pip section")


@pytest.fixture(scope="module")
def handed_to_conda(tmp_path_factory) -> tuple[dict, Path]:
    """Run the real Snakefile with --use-conda --conda-create-envs-only against a fake conda:
    (the recorded `conda env create` call, the working directory)."""
    root = tmp_path_factory.mktemp("conda")
    fake_bin = root / "bin"
    fake_bin.mkdir()
    conda = fake_bin / "conda"
    conda.write_text(FAKE_CONDA.format(python=sys.executable))
    conda.chmod(conda.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    workdir = root / "work"
    workdir.mkdir()
    config = workflow_config(workdir, {"demo": str(REPO / "config" / "datasets" / "demo.yaml")}, ["demo"])
    log = root / "calls.jsonl"
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", FAKE_CONDA_LOG=str(log),
               FAKE_CONDA_ROOT=str(root))
    # a value left over from another checkout: the Snakefile must replace it with its own folder
    env[generate.CHECKOUT_VAR] = str(root / "another-checkout")
    # one cheap job of the real DAG whose rule has `conda: "../../envs/cocon.yaml"`
    command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "1",
               "results/demo/videos", "--configfile", str(config), "--use-conda", "--conda-create-envs-only"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert result.returncode == 0, f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert not [c for c in calls if c.get("unexpected")], f"snakemake called conda unexpectedly: {calls}"
    creates = [c for c in calls if c["args"][:2] == ["env", "create"]]
    assert len(creates) == 1, f"expected one `conda env create`, got {calls}\n{result.stderr[-3000:]}"
    return creates[0], workdir


def test_snakemake_hands_conda_a_copy_named_by_its_content(handed_to_conda):
    call, workdir = handed_to_conda
    copy = Path(call["file"])
    # the copy, not envs/cocon.yaml: ".." in it would be .snakemake/, hence issue 13
    assert copy.parent == workdir / ".snakemake" / "conda"
    assert copy.suffix == ".yaml" and call["prefix"] == str(copy.with_suffix(""))
    assert call["content"] == ENV_FILE.read_text()
    # Snakemake's environment hash: the envs folder and this file's content (no pin file or
    # post-deploy script beside it), so a new pin or pyproject digest is a new environment
    md5 = hashlib.md5(usedforsecurity=False)
    md5.update(os.path.realpath(copy.parent).encode())
    md5.update(ENV_FILE.read_bytes())
    assert copy.stem == md5.hexdigest() + "_"  # Snakemake 9 appends "_" to new environments


def test_the_snakefile_sets_the_checkout_for_pip(handed_to_conda):
    call, _ = handed_to_conda
    assert call["COCON_CHECKOUT"] and Path(call["COCON_CHECKOUT"]).resolve() == REPO.resolve(), (
        f"conda ran with COCON_CHECKOUT={call['COCON_CHECKOUT']!r}: the Snakefile must set it to its own "
        "folder, over any inherited value (os.environ[\"COCON_CHECKOUT\"] = workflow.basedir; see docs/CONDA.md)")


def test_no_pip_line_depends_on_where_the_file_lies():
    lines = pip_lines(ENV_FILE.read_text())
    assert lines[-1] == generate.CHECKOUT_LINE
    for line in lines[:-1]:
        req = Requirement(line)  # a named requirement, not a path or an option
        assert req.url is None, line
    text = ENV_FILE.read_text()
    assert "../" not in text and " .." not in text and "./" not in text


def _pip_dry_run(requirements: Path, env: dict, *options: str) -> dict:
    """`pip install -U -r requirements` as conda's pip installer runs it (working directory:
    the requirements file's folder), as a dry run; the JSON report."""
    report = requirements.with_suffix(".report.json")
    command = [sys.executable, "-m", "pip", "install", "-U", "-r", requirements.name, "--exists-action=b",
               "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), *options]
    result = subprocess.run(command, cwd=requirements.parent, env=env, capture_output=True, text=True, timeout=1400)
    assert result.returncode == 0, f"pip could not resolve:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return {canonicalize_name(item["metadata"]["name"]): item for item in json.loads(report.read_text())["install"]}


def _offline(requirements: Path, line: str) -> Path:
    requirements.write_text(line + "\n")
    return requirements


# offline: only the project itself, built with this interpreter's setuptools
OFFLINE = ("--no-deps", "--no-build-isolation", "--no-index")


def test_pip_finds_this_checkout_from_the_copys_folder(handed_to_conda):
    call, _ = handed_to_conda
    if not call["COCON_CHECKOUT"] or Path(call["COCON_CHECKOUT"]).resolve() != REPO.resolve():
        pytest.fail("conda ran without this checkout in COCON_CHECKOUT: see test_the_snakefile_sets_the_checkout_for_pip")
    folder = Path(call["file"]).parent
    requirements = _offline(folder / "condaenv.offline.requirements.txt", pip_lines(call["content"])[-1])
    installs = _pip_dry_run(requirements, dict(os.environ, COCON_CHECKOUT=call["COCON_CHECKOUT"]), *OFFLINE)
    assert installs["cocon"]["download_info"] == {"url": REPO.resolve().as_uri(), "dir_info": {"editable": True}}


def test_a_checkout_path_with_spaces_and_the_old_relative_line(tmp_path):
    checkout = tmp_path / "a checkout" / "cocon"
    checkout.parent.mkdir()
    checkout.symlink_to(REPO)
    folder = tmp_path / "work" / ".snakemake" / "conda"
    folder.mkdir(parents=True)
    requirements = _offline(folder / "condaenv.space.requirements.txt", generate.CHECKOUT_LINE)
    installs = _pip_dry_run(requirements, dict(os.environ, COCON_CHECKOUT=str(checkout)), *OFFLINE)
    assert installs["cocon"]["download_info"]["url"] == checkout.as_uri()
    # issue 13: the former `-e ..`, read from the copy's folder, names .snakemake/
    old = _offline(folder / "condaenv.old.requirements.txt", "-e ..")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-r", old.name, "--dry-run", *OFFLINE],
                            cwd=folder, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "work/.snakemake" in result.stderr


def _pypi_reachable() -> str | None:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/pip/"
    try:
        urllib.request.urlopen(urllib.request.Request(index, method="HEAD"), timeout=15).close()
    except Exception as e:  # noqa: BLE001  any failure means: no index here
        return f"needs the package index ({index}) to resolve the environment's pip section: {e}"
    return None


_NO_INDEX = _pypi_reachable()


@pytest.mark.skipif(_NO_INDEX is not None, reason=_NO_INDEX or "")
@pytest.mark.timeout(1500)
def test_pip_section_of_the_copy_resolves_to_this_checkout_and_the_pins(handed_to_conda):
    """Conda's pip installer: the pip lines in a requirements file beside the env file,
    `pip install -U -r <file> --exists-action=b` with the env file's folder as working
    directory. Here a dry run into an empty environment (--ignore-installed), with the
    variables Snakemake gave conda."""
    call, _ = handed_to_conda
    if not call["COCON_CHECKOUT"] or Path(call["COCON_CHECKOUT"]).resolve() != REPO.resolve():
        pytest.fail("conda ran without this checkout in COCON_CHECKOUT: see test_the_snakefile_sets_the_checkout_for_pip")
    folder = Path(call["file"]).parent
    lines = pip_lines(call["content"])
    requirements = folder / "condaenv.test.requirements.txt"
    requirements.write_text("\n".join(lines))
    installs = _pip_dry_run(requirements, dict(os.environ, COCON_CHECKOUT=call["COCON_CHECKOUT"]))

    cocon = installs["cocon"]
    assert cocon["download_info"]["url"] == REPO.resolve().as_uri()
    assert cocon["download_info"].get("dir_info", {}).get("editable") is True
    assert cocon["metadata"]["version"] == generate.load_pyproject()["project"]["version"]

    for line in lines[:-1]:
        req = Requirement(line)
        pinned = next(iter(req.specifier)).version
        got = installs[canonicalize_name(req.name)]
        assert got["metadata"]["version"] == pinned, f"{req.name}: {got['metadata']['version']}, pinned {pinned}"
        assert got["requested"], req.name


def test_env_file_pins_exactly_the_pyproject_dependencies():
    pyproject = generate.load_pyproject()
    python, pins, others = generate.read_env(ENV_FILE.read_text())
    reqs = generate.dependencies(pyproject)
    assert set(pins) == {canonicalize_name(r.name) for r in reqs}, "a dependency missing or extra"
    assert others == [generate.CHECKOUT_LINE]
    lines = pip_lines(ENV_FILE.read_text())
    for req, line in zip(reqs, lines):
        pinned = Requirement(line)
        assert canonicalize_name(pinned.name) == canonicalize_name(req.name)
        assert pinned.extras == req.extras and str(pinned.marker) == str(req.marker), line
        assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), (
            f"{line} is outside pyproject.toml's {req}: run `make envs`")
    assert generate.SpecifierSet(pyproject["project"]["requires-python"]).contains(python)


def test_regenerating_gives_the_same_file():
    result = subprocess.run([sys.executable, str(REPO / "envs" / "generate.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_changed_dependency_or_package_changes_the_file(tmp_path):
    """What the environment's hash follows: a pin, a new dependency, the package's metadata."""
    pyproject = generate.load_pyproject()
    python, pins, _ = generate.read_env(ENV_FILE.read_text())
    base = generate.render(pyproject, pins, python)
    assert base == ENV_FILE.read_text()

    bumped = dict(pins, tqdm=pins["tqdm"] + ".post1")
    assert generate.render(pyproject, bumped, python) != base

    scripts = json.loads(json.dumps(pyproject))
    scripts["project"]["scripts"]["cocon-extra"] = "cocon.cli:main"
    assert generate.render(scripts, pins, python) != base

    extras_only = json.loads(json.dumps(pyproject))
    extras_only["project"]["optional-dependencies"]["test"].append("hypothesis")
    assert generate.render(extras_only, pins, python) == base  # the environment installs no extras

    # a pin pyproject.toml no longer admits (tqdm>=4.66) is re-pinned to the installed version,
    # the others are kept
    stale = tmp_path / "cocon.yaml"
    stale.write_text(generate.render(pyproject, dict(pins, tqdm="4.0.0"), python))
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    text = generate.generate(tmp_path / "pyproject.toml", stale)
    _, repinned, _ = generate.read_env(text)
    assert repinned["tqdm"] == metadata.version("tqdm")
    assert {k: v for k, v in repinned.items() if k != "tqdm"} == {k: v for k, v in pins.items() if k != "tqdm"}


def test_no_snakemake_pin_file_overrides_the_environment():
    """Snakemake prefers envs/cocon.<platform>.pin.txt (a conda explicit list, which cannot
    hold pip packages) to this file; the pins live in the pip section instead."""
    assert not list((REPO / "envs").glob("cocon.*.pin.txt"))
    assert not (REPO / "envs" / "cocon.post-deploy.sh").exists()
