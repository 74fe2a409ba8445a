"""Every kind of bad video is excluded with its own reason; the good ones are still processed."""
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from cocon.data.manifest import ExcludedVideosError, read_manifest, run_manifest
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
            "shard_size": 100, "strict": False, "frames": {"short_side": 32, "jpeg_quality": 90}}


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
               "classes": ["PushUps"], "shard_size": 1000, "strict": False}
    rows = run_manifest(dataset, tmp_path / "m.tsv", tmp_path / "e.tsv")
    usable = [row for row in rows if row.ok]
    assert [row.video_id for row in usable] == ["v_PushUps_g02_c03"]
    missing = read_manifest(tmp_path / "e.tsv")
    assert len(missing) == len(rows) - 1
    assert all(row.status == "missing: file not found on disk" for row in missing)
    assert f"missing: {len(missing)}" in caplog.text
