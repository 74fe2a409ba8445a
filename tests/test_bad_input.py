"""Every kind of bad video is excluded with its own reason; the good ones are still processed."""
import multiprocessing
import os
import re
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from cocon.data.manifest import ExcludedVideosError, TooFewUsableVideosError, read_manifest, run_manifest
from cocon.data.video import probe_video
from cocon.views.frames import extract_frames


def write_video(path: Path, num_frames: int, fourcc: str = "MJPG", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (64, 48))
    assert writer.isOpened()
    rng = np.random.default_rng(seed)
    for _ in range(num_frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def truncate(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    assert probe_video(path).status == "empty: zero-byte file"


def test_truncated_avi(tmp_path):
    path = truncate(write_video(tmp_path / "good.avi", 40), tmp_path / "cut.avi")
    status = probe_video(path).status
    assert status.startswith("truncated: decoded ")
    assert status.endswith("of the 40 frames the container announces")


def test_truncated_mp4(tmp_path):
    path = truncate(write_video(tmp_path / "good.mp4", 40, "mp4v"), tmp_path / "cut.mp4")
    assert "MP4/MOV container without a readable index: likely truncated" in probe_video(path).status


def test_random_bytes_named_avi(tmp_path):
    path = tmp_path / "noise.avi"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    status = probe_video(path).status
    assert status.startswith("undecodable: OpenCV cannot open it as a video (unrecognised header bytes")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    assert probe_video(path).status == "undecodable: OpenCV cannot open it as a video (a text file, not a video)"


def _probe_as_nobody(path: str, queue) -> None:
    os.setgid(65534)
    os.setuid(65534)
    queue.put(probe_video(path).status)


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        # pytest's tmp_path sits in a folder only root may enter; user nobody must reach the file
        folder = Path(tempfile.mkdtemp(prefix="cocon-unreadable-"))
        folder.chmod(0o755)
    else:
        folder = tmp_path
    path = write_video(folder / "locked.avi", 5)
    path.chmod(0)
    if os.geteuid() == 0:
        # root reads any file, so probe from a child process that dropped to user nobody
        queue = multiprocessing.get_context("fork").Queue()
        child = multiprocessing.get_context("fork").Process(target=_probe_as_nobody, args=(str(path), queue))
        child.start()
        child.join(30)
        status = queue.get(timeout=5)
        shutil.rmtree(folder)
    else:
        status = probe_video(path).status
    assert status == "unreadable: permission denied"


def test_no_decodable_frames(tmp_path):
    path = write_video(tmp_path / "hollow.avi", 0)
    assert path.stat().st_size > 0
    assert probe_video(path).status == "no frames: the container opens but no frame decodes"


def test_missing_file(tmp_path):
    assert probe_video(tmp_path / "gone.avi").status == "missing: file not found on disk"


@pytest.fixture
def mixed_folder(tmp_path):
    """A folder dataset with two good videos and every bad kind."""
    root = tmp_path / "videos"
    write_video(root / "good" / "good_a.avi", 12, seed=1)
    write_video(root / "good" / "good_b.avi", 12, seed=2)
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "empty.avi").write_bytes(b"")
    truncate(write_video(tmp_path / "full.avi", 40), root / "bad" / "cut.avi")
    (root / "bad" / "noise.avi").write_bytes(np.random.default_rng(1).bytes(5000))
    (root / "bad" / "notes.mp4").write_text("text\n" * 50)
    write_video(root / "bad" / "hollow.avi", 0)
    return {"layout": "folder", "root": str(root), "name": "mixed", "classes": None, "test_fraction": 0.0,
            "shard_size": 100, "strict": False, "min_usable_fraction": 0.0,
            "frames": {"short_side": 32, "jpeg_quality": 90}}


def test_bad_videos_excluded_good_ones_processed(mixed_folder, tmp_path, caplog):
    caplog.set_level("INFO")
    manifest, excluded = tmp_path / "manifest.tsv", tmp_path / "excluded.tsv"
    rows = run_manifest(mixed_folder, manifest, excluded, threads=2)
    statuses = {row.video_id: row.status.split(":")[0] for row in rows}
    assert statuses == {"good_a": "ok", "good_b": "ok", "empty": "empty", "cut": "truncated",
                        "noise": "undecodable", "notes": "undecodable", "hollow": "no frames"}
    assert {row.video_id for row in read_manifest(excluded)} == {"empty", "cut", "noise", "notes", "hollow"}
    assert "7 videos listed, 2 usable, 5 excluded" in caplog.text
    assert extract_frames(mixed_folder, manifest, "00000", tmp_path / "rgb.h5") == 2


def test_strict_fails_naming_the_file(mixed_folder, tmp_path):
    mixed_folder["strict"] = True
    with pytest.raises(ExcludedVideosError, match=r"(?s)strict: true.*notes\.mp4: undecodable"):
        run_manifest(mixed_folder, tmp_path / "m.tsv", tmp_path / "e.tsv")
    assert not (tmp_path / "m.tsv").exists()


def test_split_file_naming_missing_videos_is_reported(ucf_splits, videos_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    dataset = {"layout": "ucf101", "root": str(videos_dir / "ucf101"), "splits": str(ucf_splits), "name": "ucf",
               "classes": ["PushUps"], "shard_size": 1000, "strict": False, "min_usable_fraction": 0.0}
    rows = run_manifest(dataset, tmp_path / "m.tsv", tmp_path / "e.tsv")
    usable = [row for row in rows if row.ok]
    assert [row.video_id for row in usable] == ["v_PushUps_g02_c03"]
    missing = read_manifest(tmp_path / "e.tsv")
    assert len(missing) == len(rows) - 1
    assert all(row.status == "missing: file not found on disk" for row in missing)
    assert f"missing: {len(missing)}" in caplog.text


def test_broken_symbolic_link_is_unreadable_not_missing(tmp_path, real_clip):
    root = tmp_path / "videos" / "PushUps"
    root.mkdir(parents=True)
    (root / real_clip.name).symlink_to(real_clip)
    # a link to a clip that was moved away
    (root / "v_PushUps_g01_c01.avi").symlink_to(tmp_path / "moved.avi")
    assert probe_video(root / "v_PushUps_g01_c01.avi").status == \
        f"unreadable: a broken symbolic link to {tmp_path / 'moved.avi'}"
    dataset = {"layout": "folder", "root": str(tmp_path / "videos"), "name": "links", "classes": None,
               "test_fraction": 0.0, "shard_size": 100, "strict": False, "min_usable_fraction": 0.5}
    rows = {row.video_id: row.status for row in run_manifest(dataset, tmp_path / "m.tsv", tmp_path / "e.tsv")}
    assert rows == {real_clip.stem: "ok",
                    "v_PushUps_g01_c01": f"unreadable: a broken symbolic link to {tmp_path / 'moved.avi'}"}


def test_too_few_usable_videos_fail_naming_root_and_counts(mixed_folder, tmp_path):
    mixed_folder["min_usable_fraction"] = 0.5
    with pytest.raises(TooFewUsableVideosError, match=r"(?s)^root: .*videos: 2 of the 7 listed videos are usable "
                                                      r"\(29%\), fewer than min_usable_fraction 0\.5.*empty: 1"):
        run_manifest(mixed_folder, tmp_path / "m.tsv", tmp_path / "e.tsv")
    assert not (tmp_path / "m.tsv").exists()


def test_wrong_root_with_valid_split_files_fails_the_manifest(ucf_splits, videos_dir, tmp_path):
    """The class folders are in videos/ucf101, one level below the root given: nothing is found."""
    dataset = {"layout": "ucf101", "root": str(videos_dir), "splits": str(ucf_splits), "name": "ucf",
               "classes": ["PushUps", "Shotput"], "shard_size": 1000, "strict": False, "min_usable_fraction": 0.5}
    expected = rf"(?s)^root: {re.escape(str(videos_dir))}: 0 of the \d+ listed videos are usable \(0%\).*missing: \d+"
    with pytest.raises(TooFewUsableVideosError, match=expected):
        run_manifest(dataset, tmp_path / "m.tsv", tmp_path / "e.tsv")
    assert not (tmp_path / "m.tsv").exists()
    # the right root: one clip per class is on disk
    rows = run_manifest({**dataset, "root": str(videos_dir / "ucf101"), "min_usable_fraction": 0.0},
                        tmp_path / "m.tsv", tmp_path / "e.tsv")
    assert sum(row.ok for row in rows) == 2


def test_classes_without_usable_videos_are_reported(ucf_splits, videos_dir, tmp_path, caplog):
    """Basketball is listed but none of its clips is under this root; PushUps keeps one clip."""
    caplog.set_level("INFO")
    dataset = {"layout": "ucf101", "root": str(videos_dir / "ucf101"), "splits": str(ucf_splits), "name": "ucf",
               "classes": ["PushUps", "Basketball"], "shard_size": 1000, "strict": False, "min_usable_fraction": 0.0}
    rows = run_manifest(dataset, tmp_path / "m.tsv", tmp_path / "e.tsv")
    pushups = next(row for row in rows if row.ok)
    warnings = "\n".join(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    basketball = sum(row.label == "Basketball" for row in rows)
    assert f"Basketball: no usable video (all {basketball} excluded)" in warnings
    # in each split, PushUps lost every video of the role its one clip does not take
    lost = [f"split {split} {'train' if pushups.role(split) == 'test' else 'test'}" for split in (1, 2, 3)]
    line = next(line.strip() for line in warnings.splitlines() if line.strip().startswith("PushUps:"))
    assert re.sub(r" \(\d+ excluded\)", "", line) == "PushUps: " + ", ".join(lost)
    with pytest.raises(ExcludedVideosError, match=r"(?s)strict: true.*Basketball: no usable video"):
        run_manifest({**dataset, "strict": True}, tmp_path / "m.tsv", tmp_path / "e.tsv")
