"""profiles/slurm on a real single-node SLURM (Debian's slurm-wlm with munge, no accounting
database): CPU jobs through sbatch, a cancelled job's rerun, the submissions of a 2-GPU
pretraining job (one task, --gpus=2, a job step starting torchrun with a process per GPU)
and of a 2-node, 2-GPU one (a task per node, each a torchrun agent of a c10d rendezvous),
and two pretraining jobs stopped inside an epoch, one by `scontrol requeue`, one by
`scancel --signal=USR1` (the profile's time-limit warning), that resume there and finish
with an uninterrupted run's weights.

The fixture installs slurmctld, slurmd, slurm-client and munge where they are missing
(.ci/run installs them first), writes /etc/slurm/slurm.conf (the jobstep plugin strips
SLURM_CONF, so the config must live there), starts munged, slurmctld and slurmd, and stops
them by PID afterwards. The tests skip, saying why, where not root or where SLURM cannot
be installed or started; in CI (CI set, as .ci/run runs) they fail instead."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, write_yaml

pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[test]' installs the SLURM plugin")

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
NODE_MEM_MB = 20000        # a small node: the demo's jobs must fit it
SLURM_CONF = Path("/etc/slurm/slurm.conf")
FAST = ["--slurm-init-seconds-before-status-checks", "2"]   # the tests' only flag beyond the README's

pytestmark = pytest.mark.timeout(600)


def _run(*command, check=True, **kwargs):
    return subprocess.run(command, check=check, capture_output=True, text=True, **kwargs)


def _install():
    """None when slurmctld, slurmd, sbatch and munged are there (installed from Debian if
    missing), else why not."""
    if os.geteuid() != 0:
        return "not root: the test installs and starts slurmctld, slurmd and munged"
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None
    if not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = _run("apt-get", "install", "-y", "--no-install-recommends", *PACKAGES, check=False, env=env)
    if install.returncode != 0:
        _run("apt-get", "update", check=False, env=env)
        install = _run("apt-get", "install", "-y", "--no-install-recommends", *PACKAGES, check=False, env=env)
    if install.returncode != 0:
        return f"SLURM cannot be installed: apt-get install {' '.join(PACKAGES)}: {install.stderr[-500:]}"
    return None


def _slurm_conf(host: str) -> str:
    return f"""\
# written by tests/test_slurm.py: one node, no accounting database (slurmdbd)
ClusterName=cocontest
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MinJobAge=300
SchedulerParameters=sched_interval=2
NodeName={host} CPUs={os.cpu_count()} RealMemory={NODE_MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _cannot_run(why: str):
    """Skip, saying why; in CI, where the SLURM tests must run, fail."""
    (pytest.fail if os.environ.get("CI") else pytest.skip)(f"SLURM tests: {why}")


@pytest.fixture(scope="module")
def slurm():
    why = _install()
    if why:
        _cannot_run(why)
    if SLURM_CONF.exists() and "tests/test_slurm.py" not in SLURM_CONF.read_text():
        _cannot_run(f"{SLURM_CONF} exists and was not written by this test: not touching a real cluster")
    if _run("pgrep", "-x", "slurmctld", check=False).returncode == 0:
        _cannot_run("a slurmctld is already running on this machine")
    host = socket.gethostname().split(".")[0]
    for folder in ("/etc/slurm", "/var/lib/slurm/slurmctld", "/var/lib/slurm/slurmd", "/var/log/slurm",
                   "/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(_slurm_conf(host))
    key = Path("/etc/munge/munge.key")
    if not key.exists() or key.stat().st_size < 32:
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for folder in ("/etc/munge", "/run/munge", "/var/lib/munge", "/var/log/munge"):
        shutil.chown(folder, "munge", "munge") if _has_user("munge") else None
    if _has_user("munge"):
        shutil.chown(key, "munge", "munge")
    # slurmctld keeps no state of a previous run: a fresh cluster each time
    shutil.rmtree("/var/lib/slurm/slurmctld", ignore_errors=True)
    Path("/var/lib/slurm/slurmctld").mkdir(parents=True)
    daemons = []
    try:
        munge = ["munged", "--foreground"] + (["--force"] if os.geteuid() == 0 else [])
        daemons.append(subprocess.Popen(munge, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True, user="munge" if _has_user("munge") else None))
        _wait(lambda: _run("munge", "-n", check=False).returncode == 0, 10, "munged")
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-i"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True))
        daemons.append(subprocess.Popen(["slurmd", "-D"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True))
        _wait(lambda: "idle" in _run("sinfo", "-h", "-o", "%T", check=False).stdout, 30, "an idle node in sinfo")
        yield host
    finally:
        for daemon in reversed(daemons):
            daemon.send_signal(signal.SIGTERM)
        for daemon in reversed(daemons):
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def _has_user(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _wait(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    logs = "".join(Path(log).read_text()[-2000:] for log in ("/var/log/slurm/slurmctld.log", "/var/log/slurm/slurmd.log")
                   if Path(log).exists())
    raise AssertionError(f"{what} not up after {seconds} s\n{logs}")


def tiny_dataset(workdir: Path, name: str, shard_size: int = 30, **pretrain) -> Path:
    """The demo, smaller: 3 classes x 8 videos of 48 frames, rgb and flow."""
    extra = f"pretrain: {json.dumps(pretrain)}\n" if pretrain else ""
    write_yaml(workdir / f"{name}.yaml", f"""\
        base: {REPO / 'config/datasets/demo.yaml'}
        root: results/{name}/videos
        shard_size: {shard_size}
        views: [rgb, flow]
        demo: {{num_classes: 3, videos_per_class: 8, width: 96, height: 72}}
        """)
    if extra:
        with open(workdir / f"{name}.yaml", "a") as out:
            out.write(extra)
    return write_yaml(workdir / "config.yaml", f"datasets: {{{name}: {name}.yaml}}\ntargets: [{name}]\n")


def through_slurm(workdir: Path, *targets: str, env=None, background=False):
    """snakemake --profile profiles/slurm, as README says, in ``workdir``."""
    command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--profile", str(REPO / "profiles/slurm"), *FAST, *targets,
               "--configfile", str(workdir / "config.yaml")]
    env = {**os.environ, **(env or {})}
    if background:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=500, stdin=subprocess.DEVNULL)


def submitted(output: str) -> dict[str, str]:
    """SLURM job id -> rule, from Snakemake's log of a run."""
    rules, jobs, rule = {}, {}, None
    for line in output.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1][:-1]
        elif line.startswith("jobid:") and rule:
            rules[line.split()[1]] = rule
        match = re.search(r"Job (\d+) has been submitted with SLURM jobid (\d+)", line)
        if match:
            jobs[match.group(2)] = rules[match.group(1)]
    return jobs


def scontrol(jobid: str) -> dict[str, str]:
    text = _run("scontrol", "show", "job", jobid, "-o").stdout
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def test_profiles_do_not_override_each_other():
    """profiles/default, the workflow profile, is loaded beside --profile profiles/slurm and
    wins: it must set nothing that profiles/slurm sets otherwise, nor cores or jobs."""
    local = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    cluster = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert not {"cores", "jobs", "latency-wait", "executor"} & set(local)
    assert {key: value for key, value in local.items() if cluster.get(key) != value} == {}
    result = subprocess.run([str(SNAKEMAKE), "--profile", "profiles/slurm", "-n",
                             "results/demo/finetune.json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "workflow specific profile profiles/default" in result.stderr, result.stderr
    from snakemake.cli import parse_args
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        _, args = parse_args(["--profile", "profiles/slurm", "results/demo/manifest.tsv"])
    finally:
        os.chdir(cwd)
    assert args.latency_wait == 60 and args.cores is None and args.jobs == cluster["jobs"]
    assert args.slurm_status_command == "squeue" and args.slurm_keep_successful_logs


@pytest.fixture(scope="module")
def tiny_rgb(slurm, tmp_path_factory):
    """A tiny demo's videos, manifest and rgb shard, through sbatch: (workdir, run, seconds)."""
    workdir = tmp_path_factory.mktemp("tiny")
    tiny_dataset(workdir, "tiny")
    started = time.monotonic()
    result = through_slurm(workdir, "results/tiny/views/rgb/00000.h5")
    return workdir, result, time.monotonic() - started


def test_manifest_and_rgb_through_sbatch(tiny_rgb):
    tmp_path, result, seconds = tiny_rgb
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    output = result.stdout + result.stderr
    assert "Using profiles" in output and "slurm" in output
    assert (tmp_path / "results/tiny/manifest.tsv").is_file()
    assert (tmp_path / "results/tiny/views/rgb/00000.h5").stat().st_size > 0
    jobs = submitted(output)
    assert sorted(jobs.values()) == ["demo", "frames", "manifest"], output[-3000:]
    by_rule = {rule: scontrol(jobid) for jobid, rule in jobs.items()}
    # sized by config/config.yaml (the small sizes) and config.threads, one task each
    for rule, mem, minutes, cpus in [("demo", 1000, 10, 1), ("manifest", 1000, 10, 2), ("frames", 1000, 10, 1)]:
        job = by_rule[rule]
        assert job["JobState"] == "COMPLETED", (rule, job)
        assert job["MinMemoryNode"] == f"{mem}M", (rule, job["MinMemoryNode"])
        assert job["TimeLimit"] == f"00:{minutes:02d}:00", (rule, job["TimeLimit"])
        assert job["NumCPUs"] == str(cpus) and job["NumTasks"] == "1", (rule, job["NumCPUs"], job["NumTasks"])
        assert job["Partition"] == "debug"   # no partition in the profile: the cluster's default
    # the job's own snakemake keeps the cluster profile's settings (profiles/default wins nothing)
    script = _run("scontrol", "write", "batch_script", next(iter(jobs)), "-").stdout
    assert "--latency-wait 60" in script and "--cores 'all'" in script, script
    # each SLURM job's log is kept, successful ones included
    logs = list((tmp_path / ".snakemake/slurm_logs").rglob("*.log"))
    assert {log.parts[-3] for log in logs} >= {"rule_demo", "rule_manifest", "rule_frames"}, logs
    print(f"demo, manifest and frames through sbatch: {seconds:.0f} s")


def test_cancelled_job_rerun_resubmits_only_what_is_missing(slurm, tmp_path):
    tiny_dataset(tmp_path, "tiny", shard_size=6)   # 4 shards: frames of 4 shards side by side
    targets = [f"results/tiny/views/rgb/{shard:05d}.h5" for shard in range(4)]
    run = through_slurm(tmp_path, *targets, background=True)
    cancelled = None
    deadline = time.monotonic() + 300
    while cancelled is None and time.monotonic() < deadline and run.poll() is None:
        for line in _run("squeue", "-h", "-o", "%i %T %k", check=False).stdout.splitlines():
            jobid, state, comment = (line.split(None, 2) + [""])[:3]
            if state == "RUNNING" and "rule_frames" in comment:
                _run("scancel", jobid)
                cancelled = jobid
                break
        time.sleep(0.3)
    output, _ = run.communicate(timeout=400)
    assert cancelled, "no frames job was seen running\n" + output[-3000:]
    assert run.returncode != 0, output[-3000:]
    missing = [target for target in targets if not (tmp_path / target).exists()]
    assert len(missing) == 1, (missing, output[-3000:])
    kept = {target: (tmp_path / target).stat().st_mtime_ns for target in targets if target not in missing}
    # the log of the cancelled job stays
    assert list((tmp_path / ".snakemake/slurm_logs/rule_frames").rglob(f"{cancelled}.log"))

    rerun = through_slurm(tmp_path, *targets)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-6000:]
    jobs = submitted(rerun.stdout + rerun.stderr)
    assert list(jobs.values()) == ["frames"], rerun.stderr[-3000:]
    assert all((tmp_path / target).exists() for target in targets)
    assert {target: (tmp_path / target).stat().st_mtime_ns for target in kept} == kept


FAKE_SBATCH = """#!/bin/sh
# records what sbatch receives (arguments, and the job script on stdin if any), then refuses
printf '%s\n' "$@" > "$SBATCH_RECORD.args"
cat > "$SBATCH_RECORD.stdin"
echo "sbatch: recorded, not submitted" >&2
exit 1
"""


def test_multi_gpu_pretraining_is_one_task_with_its_gpus(tiny_rgb, monkeypatch):
    """A 2-GPU pretraining job: what sbatch receives (one task, --gpus=2, a CPU per training
    process and data loader), and the torchrun command its job runs."""
    tmp_path, result, _ = tiny_rgb        # the job's inputs, made through SLURM
    assert result.returncode == 0, result.stderr[-4000:]
    tiny_dataset(tmp_path, "tiny", gpus=2, workers=3)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(FAKE_SBATCH)
    (fake / "sbatch").chmod(0o755)
    record = tmp_path / "sbatch"
    result = through_slurm(tmp_path, "results/tiny/split1/pretrain/cpc/rgb.pt",
                           env={"PATH": f"{fake}:{os.environ['PATH']}", "SBATCH_RECORD": str(record)})
    assert result.returncode != 0 and Path(f"{record}.args").exists(), result.stderr[-4000:]
    args = Path(f"{record}.args").read_text().splitlines()
    script = Path(f"{record}.stdin").read_text()
    call = " ".join(args) + " " + script
    assert "--gpus=2" in args, args
    assert "--cpus-per-task=8" in args, args     # 2 GPUs x (3 loaders + 1 training process)
    assert "--mem" in args and args[args.index("--mem") + 1] == "4000"
    assert not any(arg.startswith(("--ntasks", "--ntasks-per-gpu", "-n")) and arg not in ("-n1",) for arg in args), args
    assert "--ntasks-per-gpu" not in call and "tasks=" not in call
    assert "rule_pretrain_cpc" in call
    # one node: the plugin runs the rule's script in the batch step (mpi), which starts one job
    # step, a task starting torchrun with a process per GPU
    assert "--nodes=1" in args and "--ntasks=1" not in args and not any(arg.startswith("--gres") for arg in args)
    assert "--signal=USR1@600" in call and "--open-mode=append" in call and "--requeue" in args
    commands = _launched(monkeypatch, {"NodeList": "vm", "CPUs/Task": "8"}, gpus=2, nodes=1)
    assert commands == [["srun", "--jobid=1234", "--nodes=1", "--ntasks=1", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                         "--cpus-per-task=8", "--gres=gpu:2", sys.executable, "-m", "cocon.train.launch", "--standalone",
                         "--nproc-per-node=2", "-m", "cocon.train.worker", "pretrain", commands[0][-1]]], commands


def _launched(monkeypatch, allocation: dict, **settings) -> list[list[str]]:
    """The commands ``pretrain.launch`` runs for a job of ``settings`` in SLURM job 1234 with
    ``allocation`` (scontrol's fields; the node names from the real scontrol)."""
    from cocon.train import launch, pretrain
    calls = []
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    monkeypatch.setattr(launch, "slurm_job", lambda job_id: allocation)
    monkeypatch.setattr(launch, "run_forwarding_signals", lambda command: calls.append(command) or 0)
    state = Path(tempfile.mkdtemp())
    pretrain.launch(pretrain.PretrainJob({"pretrain": settings}, "cpc", ["rgb"], str(state / "views"),
                                         str(state / "manifest.tsv"), str(state / "rgb.pt"), str(state / "state")))
    return calls


def test_two_nodes_of_two_gpus_are_one_job_with_a_task_per_node(tiny_rgb, monkeypatch):
    """pretrain.nodes 2, gpus 2: one sbatch job over 2 nodes with one task each and 2 GPUs per
    node; its script starts one srun step, a task per node, each a torchrun agent of 2
    processes meeting in a c10d rendezvous on the first node."""
    tmp_path, result, _ = tiny_rgb
    assert result.returncode == 0, result.stderr[-4000:]
    tiny_dataset(tmp_path, "tiny", gpus=2, workers=3, nodes=2)
    fake = tmp_path / "bin2"
    fake.mkdir(exist_ok=True)
    (fake / "sbatch").write_text(FAKE_SBATCH)
    (fake / "sbatch").chmod(0o755)
    record = tmp_path / "sbatch2"
    result = through_slurm(tmp_path, "results/tiny/split1/pretrain/cpc/rgb.pt",
                           env={"PATH": f"{fake}:{os.environ['PATH']}", "SBATCH_RECORD": str(record)})
    assert result.returncode != 0 and Path(f"{record}.args").exists(), result.stderr[-4000:]
    args = Path(f"{record}.args").read_text().splitlines()
    assert {"--nodes=2", "--ntasks=2", "--gres=gpu:2", "--cpus-per-task=8"} <= set(args), args
    assert not any(arg.startswith(("--gpus", "--ntasks-per-gpu")) for arg in args), args
    commands = _launched(monkeypatch, {"NodeList": "gpu[07-08]", "CPUs/Task": "8"}, gpus=2, nodes=2)
    assert commands == [["srun", "--jobid=1234", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                         "--cpus-per-task=8", "--gres=gpu:2", sys.executable, "-m", "cocon.train.launch", "--nnodes=2",
                         "--nproc-per-node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu07:16234",
                         "--rdzv-id=slurm-1234", "-m", "cocon.train.worker", "pretrain", commands[0][-1]]], commands


BASELINE = """
import sys
from cocon.config import load_dataset_config
from cocon.train.pretrain import PretrainJob, run_pretraining
dataset = load_dataset_config("tiny.yaml", "tiny")
for split in (1, 2):
    run_pretraining(PretrainJob(dataset, "cpc", ["rgb"], "results/tiny/views", "results/tiny/manifest.tsv",
                                f"baseline/split{split}.pt", f"baseline/split{split}.state", split=split, threads=1))
"""


def _training_position(state_path: Path) -> tuple[int, int] | None:
    """(epoch, step) of the step the job is in, from its last step checkpoint, or None."""
    from cocon.train import checkpoints
    try:
        state = checkpoints.load(state_path)
    except (FileNotFoundError, ValueError):
        return None
    return state["epoch"] + 1, state["step"]


def test_requeued_and_warned_pretraining_jobs_resume_inside_the_epoch(tiny_rgb):
    """Two pretraining jobs on the real cluster: one requeued with `scontrol requeue` (SIGTERM,
    then SLURM puts it back in the queue), one sent `scancel --signal=USR1` (the profile's
    time-limit warning: training saves and requeues its job itself). Each resumes inside the
    epoch and ends with the weights of an uninterrupted run; Snakemake sees each job done once."""
    from cocon.train import checkpoints
    workdir, result, _ = tiny_rgb
    assert result.returncode == 0, result.stderr[-4000:]
    # 7 steps per epoch with a loader worker; a step checkpoint after about every step tells
    # the test where training is (it does not change what is trained)
    tiny_dataset(workdir, "tiny", batch_size=2, workers=1, cpc_epochs=2, val_fraction=0.15, checkpoint_minutes=0.001)
    with open(workdir / "tiny.yaml", "a") as dataset:
        dataset.write("official_splits: [1, 2]\n")
    with open(workdir / "config.yaml", "a") as config:
        config.write("threads: {pretrain: 1}\n")   # both jobs side by side on the 2-CPU node
    targets = [f"results/tiny/split{split}/pretrain/cpc/rgb.pt" for split in (1, 2)]
    run = through_slurm(workdir, *targets, background=True)
    baseline = subprocess.Popen([sys.executable, "-c", BASELINE], cwd=workdir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    actions = {1: ("scontrol", "requeue"), 2: ("scancel", "--signal=USR1")}
    signalled, released, pending_since = {}, set(), {}
    deadline = time.monotonic() + 400
    while run.poll() is None and time.monotonic() < deadline and len(released) < 2:
        for line in _run("squeue", "-h", "-o", "%i %T %k", check=False).stdout.splitlines():
            jobid, state, comment = (line.split(None, 2) + [""])[:3]
            split = int(re.search(r"_(\d)_rgb", comment).group(1)) if "rule_pretrain_cpc" in comment else None
            if split is None:
                continue
            if split not in signalled and state == "RUNNING":
                position = _training_position(workdir / f"results/tiny/split{split}/pretrain/cpc/rgb.state/last.pt")
                # a few steps before the epoch's end: the signal lands on a step
                if position and 1 <= position[1] <= 4:
                    _run(*actions[split], jobid)
                    signalled[split] = jobid
            elif split in signalled and split not in released and state == "PENDING":
                # a requeued job waits two minutes before it may start again: not in a test. But
                # not at once either: slurmd revokes the old run's credential with a timestamp in
                # whole seconds, and a run allocated in the same second is killed as "non-startable
                # batch job: credential revoked" (seen in CI), so wait 2 s after the requeue
                pending_since.setdefault(split, time.monotonic())
                if time.monotonic() - pending_since[split] >= 2:
                    _run("scontrol", "update", f"JobId={jobid}", "StartTime=now")
                    released.add(split)
        time.sleep(0.2)
    output, _ = run.communicate(timeout=400)
    assert set(signalled) == {1, 2} and released == {1, 2}, (signalled, released, output[-4000:])
    assert run.returncode == 0, output[-6000:]
    # one submission per job, each reported done once: the requeued jobs kept their ids
    jobs = submitted(output)
    assert sorted(jobs) == sorted(signalled.values()) and set(jobs.values()) == {"pretrain_cpc"}, jobs
    assert output.count("Finished jobid") == 2, output[-4000:]
    for split, signal_name in ((1, "SIGTERM"), (2, "SIGUSR1")):
        # the job's journal: Snakemake empties the job's log when the requeued job runs again
        log = (workdir / f"results/tiny/split{split}/pretrain/cpc/rgb.state/training.log").read_text()
        state = f"results/tiny/split{split}/pretrain/cpc/rgb.state/last.pt"
        stop = re.search(rf"{signal_name} received: saved the state at epoch (\d+), step (\d+) of 7 to {state}", log)
        assert stop, log[-3000:]
        epoch, step = map(int, stop.groups())
        assert 2 <= step <= 7, stop.group(0)   # inside the epoch
        assert f"resuming at epoch {epoch}, step {step} of 7 from {state}" in log, log[-3000:]
        if signal_name == "SIGUSR1":
            assert f"requeued SLURM job {signalled[split]}" in log
        assert scontrol(signalled[split])["Restarts"] == "1"
    _, errors = baseline.communicate(timeout=300)
    assert baseline.returncode == 0, errors[-3000:]
    for split in (1, 2):
        expected = checkpoints.load(workdir / f"baseline/split{split}.pt")["model"]
        actual = checkpoints.load(workdir / targets[split - 1])["model"]
        assert all(torch.equal(tensor, actual[name]) for name, tensor in expected.items()), split
