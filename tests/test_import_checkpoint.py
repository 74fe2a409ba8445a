"""Released DPC checkpoints: files written from DPC's published key names and layout
(tests/dpc_files.py, never DPC's code) import, round-trip, score as DPC's own forward does,
fine-tune with DPC's LC forward, and every unsafe, malformed or mismatched file is refused
with the file and the reason."""
import argparse
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cocon.analysis.features import load_encoder, recalibrate_encoder
from cocon.cli import main
from cocon.config import load_schema, validate
from cocon.data.clips import ClipDataset, ClipSpec, split_videos
from cocon.models import Classifier
from cocon.train import checkpoints
from cocon.train.distributed import Runtime
from cocon.train.finetune import dense_scores
from cocon.train.import_checkpoint import (CheckpointError, checkpoint_model_config, import_checkpoint,
                                           inspect_checkpoint)
from cocon.train.pretrain import build_model, load_pretrained, model_config
from tests.conftest import build_demo_views
from tests.dpc_files import NUMPY1_PICKLE, dpc_lc_logits, dpc_scores, dpc_state_dict, write_dpc_checkpoint

SMALL = {"num_blocks": 4, "pred_steps": 2, "input_size": 64}   # what the files do not say, kept small for speed
PARAMETERS = {"resnet18": 14_583_104, "resnet34": 32_947_776}  # DESIGN.md sections 4 and 11


@pytest.fixture(scope="module")
def r18_state():
    return dpc_state_dict("resnet18", seed=1)


def clips(batch: int = 2, blocks: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, blocks, 3, 5, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("network", ["resnet18", "resnet34"])
def test_a_dpc_pretraining_file_round_trips_and_scores_as_dpc(tmp_path, network):
    source, out = tmp_path / f"{network}.pth.tar", tmp_path / f"{network}.pt"
    state = write_dpc_checkpoint(source, network, seed=2)
    imported = import_checkpoint(source, out, SMALL)
    assert imported.format == "DPC pretraining" and imported.bn_statistics == "absent"
    assert imported.predictor == "stored" and imported.metadata == {"epoch": 100, "net": network,
                                                                  "best_acc": 0.6135, "iteration": 41200}
    model, saved = load_pretrained(out)
    assert sum(param.numel() for param in model.parameters()) == PARAMETERS[network]
    assert saved["model_config"] == {"view": "rgb", "backbone": network, "width": 1.0, "normalize": False,
                                     "input_size": 64, "num_blocks": 4, "block_length": 5, "pred_steps": 2,
                                     "frame_stride": 3}
    assert saved["bn_statistics"] == "absent" and saved["imported"]["format"] == "DPC pretraining"
    # every weight of the file, under our name, and back
    for key, value in model.state_dict().items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert key in saved["model"], key
    assert len(saved["model"]) == len(state) - 6, "all but the ConvGRU cell's second registration"
    # the score matrix of DPC's forward (batch statistics: DPC's pretraining keeps none; no dropout)
    model.train()
    model.aggregator.dropout.eval()
    blocks = clips()
    with torch.no_grad():
        pred, gt, _ = model(blocks)
        ours = torch.einsum("bpdi,cqdj->bpicqj", pred.flatten(3), gt.flatten(3))
        reference = dpc_scores(state, blocks, network, pred_steps=2)
    assert ours.shape == reference.shape == (2, 2, 4, 2, 2, 4)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_what_the_file_does_not_say_comes_from_dpcs_defaults(tmp_path, r18_state):
    write_dpc_checkpoint(tmp_path / "a.pth.tar", state_dict=r18_state)
    config = checkpoint_model_config(tmp_path / "a.pth.tar")
    assert {key: config[key] for key in ("input_size", "num_blocks", "block_length", "pred_steps",
                                         "frame_stride", "normalize", "backbone", "view")} == \
        {"input_size": 128, "num_blocks": 8, "block_length": 5, "pred_steps": 3, "frame_stride": 3,
         "normalize": False, "backbone": "resnet18", "view": "rgb"}
    assert config["bn_statistics"] == "absent"


def test_the_dpc_mode_classifier_is_dpcs_lc_forward_and_not_the_old_order(tmp_path):
    """DPC's LC (eval/model_3d_lc.py): ReLU, then the mean over time; the ConvGRU over every
    block, its last context pooled; BatchNorm1d, dropout, linear. Mean first (our old order,
    and DPC's pretraining order) moves the logits."""
    source = tmp_path / "lc.pth.tar"
    state = write_dpc_checkpoint(source, "resnet18", lc=True, seed=3)
    imported = import_checkpoint(source, tmp_path / "lc.pt", {**SMALL, "pred_steps": 1})
    assert imported.format == "DPC fine-tuned classifier (LC)"
    assert (imported.bn_statistics, imported.predictor) == ("stored", "absent")
    assert any(item.startswith("final_bn, final_fc.1") and "101 classes" in item for item in imported.not_imported)
    model, _ = load_pretrained(tmp_path / "lc.pt")
    classifier = Classifier(model, 101)
    classifier.head[0].load_state_dict({key.removeprefix("final_bn."): value for key, value in state.items()
                                        if key.startswith("final_bn.")})
    classifier.head[2].load_state_dict({"weight": state["final_fc.1.weight"], "bias": state["final_fc.1.bias"]})
    classifier.eval()
    blocks = clips(batch=3)
    with torch.no_grad():
        ours = classifier(blocks)
        reference = dpc_lc_logits(state, blocks, "resnet18")
        old_order = classifier.head(model.aggregator(F.relu(model.encode(blocks))).mean(dim=(2, 3)))
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert (old_order - reference).norm() > 0.05 * reference.norm(), "the test must tell the two orders apart"


def test_numpy_scalars_load_under_numpy_1_and_2_module_names_and_in_the_pre_zip_format(tmp_path, r18_state):
    for name, module in (("numpy2", None), ("numpy1", NUMPY1_PICKLE)):
        path = tmp_path / f"{name}.pth.tar"
        write_dpc_checkpoint(path, state_dict=r18_state, **({"pickle_module": module} if module else {}))
        data = (Path(path).read_bytes())
        assert (b"numpy.core.multiarray" in data) == (module is not None)
        assert inspect_checkpoint(path).metadata["best_acc"] == 0.6135
    legacy = tmp_path / "legacy.pth.tar"
    write_dpc_checkpoint(legacy, state_dict=r18_state, legacy_format=True)
    assert legacy.read_bytes()[:2] != b"PK", "not a zip file"
    assert inspect_checkpoint(legacy).format == "DPC pretraining"


def refused(path, match: str, options=None):
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: .*{match}"):
        inspect_checkpoint(path, options)


def test_unsafe_and_unreadable_files_are_refused(tmp_path, r18_state):
    unsafe = tmp_path / "unsafe.pth.tar"
    write_dpc_checkpoint(unsafe, state_dict=r18_state, args=argparse.Namespace(net="resnet18"))
    refused(unsafe, "refused: it holds a argparse.Namespace, which is not a tensor")
    array = tmp_path / "array.pth.tar"
    write_dpc_checkpoint(array, state_dict=r18_state, best_acc=np.array([0.5, 0.6]))
    refused(array, "refused: it holds a numpy")
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(unsafe.read_bytes()[:5000])
    refused(truncated, "not a readable checkpoint")
    refused(tmp_path / "absent.pth.tar", "checkpoint not found")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    refused(other, "neither a DPC checkpoint .* nor one of ours")


def test_malformed_and_mismatched_files_are_refused_naming_the_key(tmp_path, r18_state):
    def variant(name: str, state: dict, **extra) -> Path:
        path = tmp_path / f"{name}.pth.tar"
        write_dpc_checkpoint(path, state_dict=state, **extra)
        return path

    refused(variant("unknown", {**r18_state, "agg.cell_list.1.reset_gate.weight": torch.zeros(1)}),
            "1 keys of state_dict are not DPC's .*agg.cell_list.1.reset_gate.weight")
    missing = {key: value for key, value in r18_state.items() if key != "backbone.layer3.1.conv2.weight"}
    refused(variant("missing", missing), "weights of the model are not in the file: encoder.stages.2.1.conv2.weight")
    wrong = {**r18_state, "backbone.layer2.0.conv1.weight": torch.zeros(128, 64, 3, 3, 3)}
    refused(variant("shape", wrong), re.escape("backbone.layer2.0.conv1.weight: shape [128, 64, 3, 3, 3] in the "
                                               "file, [128, 64, 1, 3, 3] in the model"))
    r34 = variant("r34_as_r18", dpc_state_dict("resnet34", seed=4), net="resnet18")
    refused(r34, re.escape("net says 'resnet18', but the weights are a resnet34 ([3, 4, 6, 3] blocks per stage)"))
    r34_option = variant("r34", dpc_state_dict("resnet34", seed=4), net="resnet34")
    refused(r34_option, "backbone: the options say 'resnet18', but the weights .* are a 'resnet34'",
            {"backbone": "resnet18"})
    copies = dict(r18_state)
    copies["agg.ConvGRUCell_00.out_gate.weight"] = copies["agg.cell_list.0.out_gate.weight"] + 1e-3
    refused(variant("copies", copies), "agg.cell_list.0.out_gate.weight and agg.ConvGRUCell_00.out_gate.weight "
                                       "differ .*the same module registered twice")
    mixed = {**r18_state, "backbone.bn1.running_mean": torch.zeros(64), "backbone.bn1.running_var": torch.ones(64)}
    refused(variant("mixed", mixed), "some BatchNorm layers carry running statistics and some do not")
    lc_and_predictor = {**dpc_state_dict("resnet18", lc=True, seed=5),
                        **{key: value for key, value in r18_state.items() if key.startswith("network_pred")}}
    refused(variant("both", lc_and_predictor), "both a predictor .* and a classifier")
    refused(variant("normalize", r18_state), "normalize: the options say true .* normalize is false for it",
            {"normalize": True})
    refused(variant("flow", r18_state), "view: the options say 'flow', but backbone.conv1.weight reads 3 channels",
            {"view": "flow"})
    prefixed = tmp_path / "prefix.pth.tar"
    torch.save({"net": "resnet18", "state_dict": {**{f"module.{key}": value for key, value in r18_state.items()},
                                                  "backbone.conv1.weight": r18_state["backbone.conv1.weight"]}},
               prefixed)
    refused(prefixed, "mixes keys with and without the nn.DataParallel prefix")


def test_our_own_checkpoints_pass_and_contradictions_are_refused(tmp_path, r18_state):
    write_dpc_checkpoint(tmp_path / "dpc.pth.tar", state_dict=r18_state)
    import_checkpoint(tmp_path / "dpc.pth.tar", tmp_path / "once.pt")
    again = import_checkpoint(tmp_path / "once.pt", tmp_path / "twice.pt", {"input_size": 128})
    assert again.format == "cocon" and again.bn_statistics == "absent"
    refused(tmp_path / "once.pt", "input_size: the options say 224, but the checkpoint's model has 128",
            {"input_size": 224})
    once, twice = (load_pretrained(tmp_path / name)[0].state_dict() for name in ("once.pt", "twice.pt"))
    for name, value in twice.items():
        assert torch.equal(value, once[name]), name


def test_the_command_imports_and_refuses(tmp_path, r18_state, capsys):
    source = tmp_path / "dpc.pth.tar"
    write_dpc_checkpoint(source, state_dict=r18_state)
    assert main(["import-checkpoint", str(source), "--out", str(tmp_path / "out.pt"), "--input-size", "224"]) == 0
    printed = capsys.readouterr().out
    assert "DPC pretraining, resnet18 rgb at 224 px" in printed and "no running statistics" in printed
    assert "not imported: optimizer" in printed
    assert main(["import-checkpoint", str(source), "--out", str(tmp_path / "no.pt"), "--backbone", "resnet34"]) == 1
    assert "cocon import-checkpoint: error: " in capsys.readouterr().err and not (tmp_path / "no.pt").exists()


# ---- BatchNorm statistics in the stages that run an imported encoder in eval mode ----------

TINY = {"backbone": "resnet18", "width": 0.125, "num_blocks": 4, "pred_steps": 1, "block_length": 2,
        "frame_stride": 2, "input_size": {"rgb": 32, "flow": 32, "pose": 16, "seg": 16}, "gpus": 0, "normalize": False}


def tiny_dataset(root: Path) -> dict:
    dataset = validate({"layout": "demo", "root": str(root / "videos"), "test_fraction": 0.34,
                        "demo": {"num_classes": 3, "videos_per_class": 3, "num_frames": 30, "width": 64,
                                 "height": 48},
                        "frames": {"short_side": 48}, "flow": {"method": "farneback"}, "pretrain": TINY,
                        "finetune": {"val_fraction": 0.34, "gpus": 0, "bn_batches": 50}},
                       load_schema("dataset.schema.yaml"), "tiny")
    dataset["name"] = "tiny"
    return dataset


@pytest.fixture(scope="module")
def demo_views(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    return build_demo_views(root, tiny_dataset(root))


def checkpoint_without_statistics(path: Path) -> Path:
    """A narrow model saved as an import of a DPC pretraining file saves it: no running statistics."""
    torch.manual_seed(7)
    model = build_model(TINY, "rgb")
    weights = {key: value for key, value in model.state_dict().items()
               if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    checkpoints.save({"method": "external", "view": "rgb", "model": weights, "model_config": model_config(TINY, "rgb"),
                      "bn_statistics": "absent", "predictor": "stored"}, path)
    return path


def test_the_features_stage_recalibrates_an_encoder_without_statistics(demo_views, tmp_path, caplog):
    from cocon.analysis.features import FeaturesJob

    caplog.set_level(logging.INFO, logger="cocon")
    dataset = tiny_dataset(demo_views)
    path = checkpoint_without_statistics(tmp_path / "imported.pt")
    model, geometry = load_encoder(dataset, "rgb", str(path))
    assert geometry["without_statistics"]
    stem = model.encoder.stem[1]
    assert torch.equal(stem.running_mean, torch.zeros_like(stem.running_mean))
    # one batch of every train window: the recalibrated mean is that batch's, exactly
    job = FeaturesJob(dataset, "external/imported", "rgb", str(demo_views / "views"),
                      str(demo_views / "manifest.tsv"), str(path), str(tmp_path / "f.npz"), batch_size=1000)
    train, _, _ = split_videos(job.manifest, 1, 0.34, 0)
    recalibrate_encoder(model, train, job, geometry, torch.device("cpu"))
    assert not model.training and "recalibrated on 1 batches" in caplog.text
    # the statistics of the train windows, not the initial mean 0 and variance 1
    windows = ClipDataset(train, job.views_dir, ["rgb"], {"rgb": 32}, geometry["spec"], train=False,
                          center_crop=dataset["finetune"]["center_crop"])
    blocks = torch.stack([windows[item]["rgb"] for item in range(len(windows))])
    with torch.no_grad():
        stem_output = model.encoder.stem[0](blocks.flatten(0, 1))
    torch.testing.assert_close(stem.running_mean, stem_output.mean(dim=(0, 2, 3, 4)), rtol=1e-4, atol=1e-5)


def test_a_random_encoder_keeps_the_placeholder_statistics_unless_asked(demo_views, tmp_path, caplog):
    from cocon.analysis.features import FeaturesJob, compute_features

    caplog.set_level(logging.INFO, logger="cocon")
    dataset = tiny_dataset(demo_views)
    _, placeholder = load_encoder(dataset, "rgb", None)
    assert not placeholder["without_statistics"]
    _, asked = load_encoder(dataset, "rgb", None, recalibrate_random=True)
    assert asked["without_statistics"]
    jobs = {recalibrate: FeaturesJob(dataset, "random", "rgb", str(demo_views / "views"), str(demo_views / "manifest.tsv"),
                                     None, str(tmp_path / "f.npz"), recalibrate_random=recalibrate)
            for recalibrate in (False, True)}
    as_built = compute_features(jobs[False])
    assert "recalibrated" not in caplog.text
    recalibrated = compute_features(jobs[True])
    assert "the random rgb encoder has no BatchNorm running statistics: recalibrated" in caplog.text
    # the same weights (one seed), normalised differently: the features must differ
    assert as_built.context.shape == recalibrated.context.shape
    assert not np.allclose(as_built.context, recalibrated.context)


def test_dense_scores_average_crops_and_windows(demo_views):
    torch.manual_seed(0)
    classifier = Classifier(build_model(TINY, "flow"), 3).eval()
    _, _, test = split_videos(demo_views / "manifest.tsv", 1, 0.34, 0)
    spec = ClipSpec(4, 2, 2)
    ten = ClipDataset(test, demo_views / "views", ["flow"], {"flow": 32}, spec, train=False, center_crop=0.8,
                      test_crops=10)
    one = ClipDataset(test, demo_views / "views", ["flow"], {"flow": 32}, spec, train=False, center_crop=0.8)
    assert len(ten) == 10 * len(one) and [ten[item]["crop"] for item in range(10)] == list(range(10))
    alone = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    scores_ten, scores_one = dense_scores(classifier, ten, len(test), 7, alone), \
        dense_scores(classifier, one, len(test), 7, alone)
    assert len(scores_ten.clips) == len(scores_one.clips) == len(one)
    # crop 0 of ten is the single centre crop: the other nine move the scores
    assert not np.allclose(scores_ten.clips, scores_one.clips)
    for video in range(len(test)):
        mine = scores_ten.clip_videos == video
        np.testing.assert_allclose(scores_ten.videos[video], scores_ten.clips[mine].mean(axis=0), rtol=1e-5)
    with torch.no_grad():
        by_hand = torch.softmax(classifier(torch.stack([ten[item]["flow"] for item in range(10)])), dim=1).mean(0)
    np.testing.assert_allclose(scores_ten.clips[0], by_hand.numpy(), rtol=1e-5, atol=1e-6)
