from collections import Counter
from pathlib import Path

import pytest

from cocon.config import load_dataset_config
from cocon.data.datasets import (
    DatasetError, assign_shards, check_alignment_pairs, check_training_split, list_folder, list_hmdb51, list_kinetics, list_ucf101,
    list_videos, resolve_path,
)
from tests.conftest import write_yaml


def test_ucf101_official_lists(ucf_splits):
    entries = list_ucf101(ucf_splits)
    assert len(entries) == 13320
    assert len({entry.label for entry in entries}) == 101
    roles = Counter(entry.splits[0] for entry in entries)
    assert roles == {"train": 9537, "test": 3783}
    for split in (1, 2):
        assert set(Counter(entry.splits[split] for entry in entries)) == {"train", "test"}
    # classInd.txt numbers from 1; labels are numbered from 0
    first = next(entry for entry in entries if entry.label == "ApplyEyeMakeup")
    assert first.label_index == 0
    assert max(entry.label_index for entry in entries) == 100


def test_ucf101_handstand_quirk(ucf_splits):
    entries = [entry for entry in list_ucf101(ucf_splits) if entry.label == "HandstandPushups"]
    assert entries, "the HandstandPushups class has videos"
    for entry in entries:
        folder, name = entry.relpath.split("/")
        assert folder == "HandstandPushups"
        assert name.startswith("v_HandStandPushups_")
        assert entry.video_id == name[:-4]


def test_hmdb51_official_lists(hmdb_splits):
    entries = list_hmdb51(hmdb_splits)
    assert len({entry.label for entry in entries}) == 51
    for split in range(3):
        roles = Counter(entry.splits[split] for entry in entries)
        assert roles["train"] == 3570
        assert roles["test"] == 1530


def test_kinetics_csv(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "arm wrestling,abc123,10,20,train\n"
        "abseiling,xyz789,0,10,validate\n"
    )
    entries = list_kinetics([csv])
    assert [(entry.video_id, entry.label, entry.label_index, entry.splits) for entry in entries] == [
        ("abc123_000010_000020", "arm wrestling", 1, ("train",)),
        ("xyz789_000000_000010", "abseiling", 0, ("val",)),
    ]
    # a downloader that spelled the class folder with underscores
    (tmp_path / "videos" / "arm_wrestling").mkdir(parents=True)
    (tmp_path / "videos" / "arm_wrestling" / "abc123_000010_000020.mp4").write_bytes(b"x")
    found = resolve_path(tmp_path / "videos", entries[0].relpath)
    assert found == tmp_path / "videos" / "arm_wrestling" / "abc123_000010_000020.mp4"


def test_kinetics_bad_csv_names_file(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("label,youtube_id\nx,y\n")
    with pytest.raises(DatasetError, match="bad.csv.*columns"):
        list_kinetics([csv])


def test_folder_layout_split_is_stratified(tmp_path):
    for label in ("jump", "run"):
        (tmp_path / label).mkdir()
        for index in range(8):
            (tmp_path / label / f"{label}_{index}.mp4").write_bytes(b"")
    (tmp_path / "run" / "notes.txt").write_text("not a video")
    entries = list_folder(tmp_path, test_fraction=0.25)
    assert len(entries) == 16
    for label in ("jump", "run"):
        roles = Counter(entry.splits[0] for entry in entries if entry.label == label)
        assert roles == {"train": 6, "test": 2}


def test_duplicate_ids_are_an_error(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "same.avi").write_bytes(b"")
    with pytest.raises(DatasetError, match="share the id 'same'"):
        list_folder(tmp_path, 0.25)


def test_classes_filter_and_shards(ucf_splits, tmp_path):
    dataset = {"layout": "ucf101", "root": str(tmp_path), "splits": str(ucf_splits), "classes": ["PushUps", "Shotput"]}
    entries = list_videos(dataset)
    assert {entry.label for entry in entries} == {"PushUps", "Shotput"}
    shards = assign_shards(entries, 100)
    assert list(shards) == ["00000", "00001", "00002"]
    assert sum(map(len, shards.values())) == len(entries)
    with pytest.raises(DatasetError, match="classes"):
        list_videos({**dataset, "classes": ["NoSuchClass"]})


def test_missing_split_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match="classInd.txt"):
        list_ucf101(tmp_path)


def test_reencoded_copy_is_found_by_stem(hmdb_splits, videos_dir):
    root = videos_dir / "hmdb51_reencoded"
    entries = [entry for entry in list_hmdb51(hmdb_splits) if (root / entry.label).is_dir()]
    found = [resolve_path(root, entry.relpath) for entry in entries]
    existing = [path for path in found if path.exists()]
    assert len(existing) == len(list(root.glob("*/*.mp4")))
    assert all(path.suffix == ".mp4" for path in existing)


def test_folders_rotate_the_held_out_share_over_three_splits():
    from cocon.data.datasets import stratified_roles

    roles = stratified_roles({"a": [f"a{index}" for index in range(8)], "b": ["b0", "b1", "b2"]}, 0.25)
    tested = [{name for name, video_roles in roles.items() if video_roles[split] == "test"} for split in range(3)]
    # split 1 is the split of earlier releases: every 4th video of each sorted class
    assert tested[0] == {"a3", "a7"}
    assert tested[1] == {"a2", "a6", "b2"} and tested[2] == {"a1", "a5", "b1"}
    assert not (tested[0] & tested[1]) and not (tested[1] & tested[2]) and not (tested[0] & tested[2])
    # above one half the other way round: 0.75 trains on every 4th video and tests on the rest
    mostly = stratified_roles({"a": [f"a{index}" for index in range(8)]}, 0.75)
    assert {name for name, video_roles in mostly.items() if video_roles[0] == "train"} == {"a3", "a7"}


@pytest.mark.parametrize("key", ["root", "splits"])
def test_a_folder_that_does_not_exist_is_named_with_its_key(ucf_splits, tmp_path, key):
    dataset = {"layout": "ucf101", "root": str(tmp_path), "splits": str(ucf_splits), "classes": None,
               key: str(tmp_path / "nowhere")}
    with pytest.raises(DatasetError, match=rf"^{key}: .*nowhere: folder not found"):
        list_videos(dataset)


def test_split_file_errors_name_the_splits_key(tmp_path):
    with pytest.raises(DatasetError, match=r"^splits: .*classInd\.txt: split file not found"):
        list_videos({"layout": "ucf101", "root": str(tmp_path), "splits": str(tmp_path), "classes": None})
    with pytest.raises(DatasetError, match=r"^annotations: .*k400\.csv: Kinetics annotation CSV not found"):
        list_videos({"layout": "kinetics400", "root": str(tmp_path), "annotations": [str(tmp_path / "k400.csv")],
                     "classes": None})


def folder_dataset(tmp_path, videos_per_class: dict[str, int], settings: str = "") -> dict:
    """A validated folder-layout config over class folders of empty video files (listing
    opens no video)."""
    for label, count in videos_per_class.items():
        (tmp_path / "videos" / label).mkdir(parents=True)
        for index in range(count):
            (tmp_path / "videos" / label / f"{label}_{index}.avi").write_bytes(b"")
    return load_dataset_config(write_yaml(tmp_path / "folder.yaml", f"layout: folder\nroot: {tmp_path / 'videos'}\n"
                                                                    f"{settings}"))


def test_classes_too_small_for_a_test_video_are_refused_before_finetuning(tmp_path):
    # every 4th video of a class is tested on in split 1: classes of 3 give none
    dataset = folder_dataset(tmp_path, {"jump": 3, "run": 2}, "official_splits: [1, 2]\n"
                                                              "pretrain: {batch_size: 2}\nfinetune: {batch_size: 2}\n")
    entries = list_videos(dataset)
    with pytest.raises(DatasetError, match=r"^test_fraction: 0\.25 holds out video 4 \(in name order\) of each "
                                           r"class in split 1, and no class has 4 videos \(the largest has 3\)"):
        check_training_split(dataset, entries, 1, "finetune")
    check_training_split(dataset, entries, 1, "pretrain")  # pretraining needs no test video
    check_training_split(dataset, entries, 2, "finetune")  # split 2 tests the 3rd video of jump
    with pytest.raises(DatasetError, match=r"^test_fraction: 0 holds out no video"):
        check_training_split({**dataset, "test_fraction": 0}, list_folder(tmp_path / "videos", 0), 1, "finetune")


def test_classes_too_small_for_a_train_video_are_refused(tmp_path):
    # test_fraction 0.5: split 2 tests the 1st video of each class, the only one
    dataset = folder_dataset(tmp_path, {"jump": 1, "run": 1}, "test_fraction: 0.5\npretrain: {batch_size: 2}\n")
    with pytest.raises(DatasetError, match=r"^test_fraction: 0\.5 leaves split 2 no train video"):
        check_training_split(dataset, list_videos(dataset), 2, "pretrain")


def test_a_batch_larger_than_the_listed_train_videos_is_refused(tmp_path):
    dataset = folder_dataset(tmp_path, {"jump": 4, "run": 4}, "pretrain: {batch_size: 4, gpus: 2}\n")
    with pytest.raises(DatasetError, match=r"^pretrain\.batch_size: one batch of 8 \(4 per GPU x 2 GPUs\) needs "
                                           r"more train videos than the 6 that split 1 lists"):
        check_training_split(dataset, list_videos(dataset), 1, "pretrain")
    with pytest.raises(DatasetError, match=r"^finetune\.batch_size: one batch of 16 needs"):
        check_training_split(dataset, list_videos(dataset), 1, "finetune")


def test_kinetics_without_test_rows_cannot_be_finetuned(tmp_path):
    (tmp_path / "k400.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                       + "".join(f"run,v{index},0,10,train\n" for index in range(4))
                                       + "run,w0,0,10,validate\n")
    dataset = {"layout": "kinetics400", "annotations": [str(tmp_path / "k400.csv")], "official_splits": [1],
               "test_fraction": 0.25, "finetune": {"batch_size": 2, "gpus": 0}}
    with pytest.raises(DatasetError, match=r"^annotations: no row has split 'test'"):
        check_training_split(dataset, list_kinetics([tmp_path / "k400.csv"]), 1, "finetune")



def test_alignment_pairs_must_be_listed_test_videos_of_the_split(tmp_path):
    dataset = folder_dataset(tmp_path, {"jump": 4, "run": 4}, "")
    entries = list_videos(dataset)
    test = [entry.video_id for entry in entries if entry.splits[0] == "test"]
    train = next(entry.video_id for entry in entries if entry.splits[0] == "train")
    check_alignment_pairs({**dataset, "analysis": {**dataset["analysis"], "alignment_pairs": [test[:2]]}}, entries, 1)
    check_alignment_pairs(dataset, entries, 1)  # null: same-class pairs are chosen later
    bad = {**dataset, "analysis": {**dataset["analysis"], "alignment_pairs": [[test[0], train], [test[1], "nope"]]}}
    with pytest.raises(DatasetError, match=rf"^analysis\.alignment_pairs: {train}, nope are not listed test videos "
                                           r"of split 1$"):
        check_alignment_pairs(bad, entries, 1)
