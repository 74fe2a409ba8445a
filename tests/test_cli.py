import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_yaml
from tests.test_bad_input import write_video

COCON = str(Path(sys.executable).with_name("cocon"))


@pytest.mark.parametrize("command", ["demo", "manifest", "shards", "frames", "flow", "pose", "seg", "pretrain",
                                     "finetune", "report", "summarize", "paper", "seeds", "show", "inspect",
                                     "verify", "features", "retrieval", "probe", "analyse", "import-views"])
def test_every_stage_has_help(command):
    result = subprocess.run([COCON, command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: cocon {command}")


def test_stages_run_without_snakemake(tmp_path):
    for index in range(2):
        write_video(tmp_path / "videos" / "wave" / f"wave_{index}.avi", 6, seed=index)
    config = write_yaml(tmp_path / "mine.yaml", f"""
        layout: folder
        root: {tmp_path / 'videos'}
        frames: {{short_side: 32}}
        flow: {{method: farneback}}
    """)
    def cocon(*args):
        result = subprocess.run([COCON, *args], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout
    assert cocon("shards", "--dataset", str(config)) == "00000\t2\n"
    assert "2 usable" in cocon("manifest", "--dataset", str(config), "--manifest", "m.tsv", "--excluded", "e.tsv")
    cocon("frames", "--dataset", str(config), "--manifest", "m.tsv", "--shard", "00000", "--out", "rgb.h5")
    cocon("flow", "--dataset", str(config), "--rgb", "rgb.h5", "--out", "flow.h5", "--threads", "2")
    info = json.loads(cocon("inspect", "flow.h5"))
    assert info["view"] == "flow"
    assert info["videos"] == {"wave_0": 5, "wave_1": 5}
    assert info["attrs"]["dataset"] == "mine"


def test_bad_config_is_a_clear_error(tmp_path):
    config = write_yaml(tmp_path / "bad.yaml", "layout: folder\nroot: x\nshard_size: 0\n")
    result = subprocess.run([COCON, "shards", "--dataset", str(config)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "bad.yaml" in result.stderr and "shard_size: 0 is less than the minimum of 1" in result.stderr
