"""End-to-end: DPC's released weights (files written from DPC's published layout) as
initialisations of the DAG on real UCF101 clips, ResNet18 at 128 px and ResNet34 at 224 px,
into finetune.json and Table 6 of paper.md; contradictions refused before any job runs."""
import json

import pytest

from cocon.train import checkpoints
from tests.conftest import run_snakemake, workflow_config, write_yaml
from tests.dpc_files import write_dpc_checkpoint

pytestmark = pytest.mark.e2e

# what DPC's files do not say, kept small so that a ResNet34 at 224 px fine-tunes on 2 cores:
# 2 blocks of 2 frames, 1 frame in 20 (a test video of 250 frames is 6 windows)
GEOMETRY = "num_blocks: 2, block_length: 2, pred_steps: 1, frame_stride: 20"


@pytest.fixture(scope="module")
def released(tmp_path_factory, ucf_splits, videos_dir):
    workdir = tmp_path_factory.mktemp("released")
    write_dpc_checkpoint(workdir / "ucf101-rgb-128_resnet18_dpc.pth.tar", "resnet18", seed=1)
    write_dpc_checkpoint(workdir / "k400_224_r34_dpc-rnn.pth.tar", "resnet34", seed=2)
    write_yaml(workdir / "ucf.yaml", f"""
        layout: ucf101
        root: {videos_dir / 'ucf101'}
        splits: {ucf_splits}
        classes: [PushUps, Shotput, HeadMassage, PlayingGuitar, ApplyEyeMakeup]
        official_splits: [3]      # PlayingGuitar tests, the other four train (one validates)
        min_usable_fraction: 0.0
        shard_size: 1000
        views: [rgb]
        frames: {{short_side: 240}}   # DPC's extraction: large enough for a 224 crop
        external:
          dpc_ucf101_r18: {{path: ucf101-rgb-128_resnet18_dpc.pth.tar, label: "DPC ResNet18 128 px, UCF101", {GEOMETRY}}}
          dpc_k400_r34: {{path: k400_224_r34_dpc-rnn.pth.tar, label: "DPC ResNet34 224 px, Kinetics-400",
                         input_size: 224, {GEOMETRY}}}
        pretrain: {{width: 0.125, num_blocks: 2, pred_steps: 1, block_length: 2, frame_stride: 20,
                   input_size: {{rgb: 32}}, gpus: 0}}
        finetune: {{inits: [random, dpc_ucf101_r18, dpc_k400_r34], epochs: 1, milestones: [1], batch_size: 2,
                   workers: 0, gpus: 0, bn_batches: 1}}
        paper: {{tables: [6], released: {{dpc_ucf101: dpc_ucf101_r18, dpc_k400_r34: dpc_k400_r34}}}}
    """)
    config = workflow_config(workdir, {"ucf": "ucf.yaml"}, ["ucf"])
    run_snakemake(workdir, "results/ucf/finetune.json", "results/ucf/paper.md", "--configfile", str(config))
    return workdir, config


def test_released_resnet18_and_resnet34_fine_tune_into_finetune_json_and_paper_md(released):
    workdir, _ = released
    results = workdir / "results" / "ucf"
    document = json.loads((results / "finetune.json").read_text())
    rows = {(row["init"], row["view"]): row for row in document["results"]}
    assert set(rows) == {(init, view) for init in ("random", "external/dpc_ucf101_r18", "external/dpc_k400_r34")
                         for view in ("rgb", "ensemble")}
    r34 = rows[("external/dpc_k400_r34", "rgb")]
    assert r34["method"] == "external" and r34["pretrained_on"] is None
    assert r34["external"] == {"name": "dpc_k400_r34", "path": "k400_224_r34_dpc-rnn.pth.tar",
                               "label": "DPC ResNet34 224 px, Kinetics-400", "format": "DPC pretraining"}
    assert r34["num_test_videos"] == 1 and r34["num_test_windows"] >= 2
    assert 0 <= r34["clip_top1"] <= 1
    # built from the checkpoint's own config, not the dataset's pretrain section (32 px, width 0.125)
    for name, backbone, size in (("dpc_k400_r34", "resnet34", 224), ("dpc_ucf101_r18", "resnet18", 128)):
        finetuned = checkpoints.load(results / "split3" / "finetune" / "external" / name / "rgb.pt")
        assert finetuned["model_config"]["backbone"] == backbone and finetuned["model_config"]["input_size"] == size
        assert finetuned["model_config"]["normalize"] is False
        assert finetuned["pretrained"] == f"results/ucf/external/{name}.pt"
    imported = checkpoints.load(results / "external" / "dpc_k400_r34.pt")
    assert imported["bn_statistics"] == "absent" and imported["imported"]["metadata"]["net"] == "resnet34"
    markdown = (results / "finetune.md").read_text()
    assert "| Released weights: DPC ResNet34 224 px, Kinetics-400 |" in markdown
    assert "Clip-level top-1" in markdown
    details = json.loads((results / "split3" / "finetune_details.json").read_text())
    assert {"video_top1", "clip_top1", "num_test_windows"} <= set(details["external/dpc_k400_r34/rgb"])

    paper = json.loads((results / "paper.json").read_text())
    table6 = {row["label"]: row["cells"] for table in paper["tables"] if table["table"] == 6 for row in table["rows"]}
    ucf_r34 = table6["DPC, ResNet34 at 224 px, K400"][0]
    assert ucf_r34["run"] and ucf_r34["source"] == "released" and ucf_r34["init"] == "external/dpc_k400_r34"
    assert ucf_r34["released"] == {"name": "dpc_k400_r34", "path": "k400_224_r34_dpc-rnn.pth.tar"}
    assert ucf_r34["top1"] == pytest.approx(r34["top1"])
    assert table6["DPC (our CPC), RGB, UCF101"][0]["init"] == "external/dpc_ucf101_r18"
    assert table6["Random init, RGB"][0]["source"] == "ours"
    assert "†" in (results / "paper.md").read_text() and "released weights, not pretrained here" in \
        (results / "paper.md").read_text()


def test_contradictions_with_the_checkpoint_are_refused_before_any_job(released):
    workdir, config = released
    original = (workdir / "ucf.yaml").read_text()
    scores = "results/ucf/split3/finetune/external/{}/rgb.scores.npz"
    cases = [
        ("input_size: 224, ", "input_size: 224, normalize: true, ", "dpc_k400_r34",
         "external.dpc_k400_r34: k400_224_r34_dpc-rnn.pth.tar: normalize: the options say true"),
        ("frames: {short_side: 240}", "frames: {short_side: 160}", "dpc_k400_r34",
         "external.dpc_k400_r34 (its encoder's input_size 224): 224 px is larger than the 160 px short side rgb is "
         "stored at (frames.short_side)"),
        ('label: "DPC ResNet18 128 px, UCF101", ', "backbone: resnet34, ", "dpc_ucf101_r18",
         "external.dpc_ucf101_r18: ucf101-rgb-128_resnet18_dpc.pth.tar: backbone: the options say 'resnet34', but "
         "the weights ([2, 2, 2, 2] blocks per stage) are a 'resnet18'"),
    ]
    try:
        for old, new, name, message in cases:
            (workdir / "ucf.yaml").write_text(original.replace(old, new))
            # the fine-tuning job itself is planned (an up-to-date finetune.json would not plan it)
            result = run_snakemake(workdir, scores.format(name), "--configfile", str(config), "-n", check=False)
            output = result.stdout + result.stderr
            assert result.returncode != 0 and f"ucf.yaml: {message}" in output, (message, output[-3000:])
    finally:
        (workdir / "ucf.yaml").write_text(original)
