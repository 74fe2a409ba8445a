from collections import Counter
from pathlib import Path

import pytest

from cocon.data.datasets import (
    DatasetError, assign_shards, list_folder, list_hmdb51, list_kinetics, list_ucf101, list_videos, resolve_path,
)


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
