"""The experiment matrix: initialisation names, view sets, and the paper's tables as runs."""
import pytest

from cocon.config import load_dataset_config
from cocon.experiments import (ExperimentError, Init, finetune_inits, paper_cells, parse_init, pretrained_path,
                               pretraining_split, view_set_name)
from cocon.train.evaluate import summarize_splits
from tests.conftest import REPO, write_yaml


def test_view_sets_have_one_name():
    assert view_set_name(["flow", "rgb"]) == "rgb+flow"
    assert view_set_name(["seg", "pose", "flow", "rgb"]) == "rgb+flow+pose+seg"
    with pytest.raises(ExperimentError, match="at least two views"):
        view_set_name(["rgb"])
    with pytest.raises(ExperimentError, match="unknown views"):
        view_set_name(["rgb", "depth"])


def test_initialisation_names_round_trip():
    for name in ("random", "ucf101/cpc", "ucf101/cocon/rgb+flow", "kinetics400/cpc+sim/rgb+flow+pose+seg"):
        assert parse_init(name).name == name
    init = parse_init("ucf101/cocon/rgb+flow")
    assert init == Init("cocon", "ucf101", ("rgb", "flow"))
    assert init.provides("rgb") and not init.provides("pose")
    assert pretrained_path(init, 2, "rgb") == "results/ucf101/split2/pretrain/cocon/rgb+flow/joint.pt"
    assert pretrained_path(parse_init("hmdb51/cpc"), 1, "seg") == "results/hmdb51/split1/pretrain/cpc/seg.pt"
    assert pretrained_path(parse_init("random"), 1, "rgb") is None
    with pytest.raises(ExperimentError, match="write the view set as 'rgb\\+flow'"):
        parse_init("ucf101/cocon/flow+rgb")
    with pytest.raises(ExperimentError, match="is not an initialisation"):
        parse_init("ucf101/moco/rgb+flow")


@pytest.fixture
def datasets(tmp_path):
    """The shipped ucf101, hmdb51 and kinetics400 configs (placeholder paths are fine: nothing is listed)."""
    names = ("ucf101", "hmdb51", "kinetics400")
    return {name: load_dataset_config(REPO / "config" / "datasets" / f"{name}.yaml", name) for name in names}


def test_cross_dataset_pretraining_split(datasets):
    own, other = parse_init("hmdb51/cpc"), parse_init("ucf101/cocon/rgb+flow")
    assert pretraining_split(own, "hmdb51", 3, datasets) == 3
    assert pretraining_split(other, "hmdb51", 3, datasets) == 1


def test_hmdb51_finetunes_ucf101_encoders_by_default(datasets):
    assert [init.name for init in finetune_inits(datasets["hmdb51"])] == \
        ["random", "ucf101/cpc", "ucf101/cocon/rgb+flow+pose+seg"]
    assert [init.name for init in finetune_inits(datasets["kinetics400"])] == \
        ["random", "kinetics400/cpc", "kinetics400/cocon/rgb+flow"]


def test_the_ucf101_paper_cells_are_the_full_protocol(datasets):
    cells = paper_cells("ucf101", datasets)
    by_key = {(cell.table, cell.row, cell.column): cell for cell in cells}
    assert len(cells) == 10 + 16 + 24 + 8 + 18
    ablation = by_key[(1, "Lcpc + sync", "Flow")]
    assert (ablation.dataset, ablation.init, ablation.view, ablation.splits) == \
        ("ucf101", "ucf101/cpc+sync/rgb+flow", "flow", (1,))
    k400 = by_key[(2, "CoCon, K400", "RGB HMDB")]
    assert (k400.dataset, k400.init, k400.paper) == ("hmdb51", "kinetics400/cocon/rgb+flow", 46.5)
    ensemble = by_key[(6, "CoCon ensemble, 4 views, UCF101", "HMDB51")]
    assert ensemble.splits == (1, 2, 3) and ensemble.ensemble_views == ("rgb", "flow", "pose", "seg")
    assert len(ensemble.scores()) == 12
    assert by_key[(3, "CoCon", "PoseHM HMDB")].init == "ucf101/cocon/rgb+flow+pose+seg"
    not_run = [cell for cell in cells if not cell.run]
    assert {cell.row for cell in not_run} == {"DPC, ResNet34 at 224 px, K400",
                                              "CoCon ensemble, ResNet34 at 224 px, K400"}


def test_cells_without_a_dataset_say_why(datasets):
    datasets["ucf101"]["paper"].update(kinetics400=None, tables=[2, 3])
    cells = {(cell.table, cell.row, cell.column): cell for cell in paper_cells("ucf101", datasets)}
    assert cells[(2, "CPC, K400", "RGB UCF")].reason == "paper.kinetics400 is null"
    assert cells[(1, "Lcocon", "RGB")].reason == "table 1 is not in paper.tables"
    assert cells[(2, "CoCon, UCF", "RGB UCF")].run
    datasets["ucf101"]["paper"]["hmdb51"] = "hmdb"
    with pytest.raises(ExperimentError, match="paper.hmdb51: 'hmdb' is not one of the datasets"):
        paper_cells("ucf101", datasets)


def test_a_view_the_source_does_not_extract_is_not_run(datasets):
    datasets["ucf101"]["views"] = ["rgb", "flow"]
    cells = {(cell.table, cell.row, cell.column): cell for cell in paper_cells("ucf101", datasets)}
    assert "not in the views of ucf101" in cells[(3, "CPC", "PoseHM UCF")].reason
    assert cells[(5, "2 views", "RGB UCF")].run


def test_summary_over_splits_is_mean_and_spread():
    def document(split, top1):
        row = {"init": "random", "method": "random", "view_set": None, "pretrained_on": None, "view": "rgb",
               "top1": top1, "top5": 1.0, "top1_std": 0.0, "top5_std": 0.0,
               "per_split": [{"split": split, "top1": top1, "top5": 1.0}], "num_test_videos": 10,
               "num_test_windows": 20, "checkpoint": None}
        return {"dataset": "d", "splits": [split], "num_classes": 5, "config_hash": "0" * 12, "results": [row]}

    summary = summarize_splits([document(1, 0.5), document(2, 0.7), document(3, 0.6)])
    row = summary["results"][0]
    assert summary["splits"] == [1, 2, 3]
    assert row["top1"] == pytest.approx(0.6) and row["top1_std"] == pytest.approx(0.1)
    assert row["num_test_videos"] == 30 and row["checkpoints"] == [None, None, None]
    with pytest.raises(ValueError, match="different datasets"):
        summarize_splits([document(1, 0.5), {**document(2, 0.5), "dataset": "e"}])


def test_kinetics_has_one_split(tmp_path):
    path = write_yaml(tmp_path / "k.yaml", f"""
        base: {REPO / 'config' / 'datasets' / 'kinetics400.yaml'}
        official_splits: [1, 2]
    """)
    from cocon.config import ConfigError
    with pytest.raises(ConfigError, match="k.yaml: official_splits: Kinetics-400 has one split"):
        load_dataset_config(path)
