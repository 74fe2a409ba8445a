"""Dataset adapters: the official layouts and split files, turned into one list of videos.

Listing reads split/annotation files (or walks class folders) but never opens a video,
so the workflow can plan every shard of a 13,320-video dataset in milliseconds. Whether
a listed video exists and decodes is decided later, by the manifest stage.
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
SPLIT_ROLES = ("train", "val", "test", "unused")


class DatasetError(ValueError):
    """A dataset folder or split file is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class VideoEntry:
    """One listed video. ``relpath`` is relative to the dataset root and may not exist."""

    video_id: str
    label: str
    label_index: int
    relpath: str
    # one role per official split: splits[0] is split 1, ...
    splits: tuple[str, ...] = field(default_factory=tuple)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found")
    # the official UCF101 lists use CRLF endings
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _check_unique(entries: list[VideoEntry]) -> list[VideoEntry]:
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.video_id in seen:
            raise DatasetError(
                f"two videos share the id {entry.video_id!r}: {seen[entry.video_id]} and {entry.relpath}"
            )
        seen[entry.video_id] = entry.relpath
    return sorted(entries, key=lambda entry: entry.video_id)


def list_ucf101(splits_dir: Path) -> list[VideoEntry]:
    """UCF101 from ``classInd.txt``, ``trainlist0{1,2,3}.txt`` and ``testlist0{1,2,3}.txt``.

    Paths are taken as published, so the ``HandstandPushups/v_HandStandPushups_*`` quirk
    (folder and file spelled differently) resolves to the files as they are on disk.
    """
    class_index = {}
    for line in _read_lines(splits_dir / "classInd.txt"):
        number, name = line.split()
        class_index[name] = int(number) - 1
    roles: dict[str, list[str]] = {}
    for split in (1, 2, 3):
        for role, filename in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
            for line in _read_lines(splits_dir / filename):
                relpath = line.split()[0]
                roles.setdefault(relpath, ["unused"] * 3)[split - 1] = role
    entries = []
    for relpath, video_roles in roles.items():
        label = relpath.split("/")[0]
        if label not in class_index:
            raise DatasetError(f"{splits_dir}: {relpath} is in a class missing from classInd.txt")
        entries.append(VideoEntry(Path(relpath).stem, label, class_index[label], relpath, tuple(video_roles)))
    return _check_unique(entries)


HMDB_ROLES = {"0": "unused", "1": "train", "2": "test"}


def list_hmdb51(splits_dir: Path) -> list[VideoEntry]:
    """HMDB51 from the 153 files ``<class>_test_split{1,2,3}.txt`` (lines ``name.avi 0|1|2``)."""
    files = sorted(splits_dir.glob("*_test_split[123].txt"))
    if not files:
        raise DatasetError(f"{splits_dir}: no HMDB51 split files (*_test_split1.txt ...) found")
    labels = sorted({path.name.rsplit("_test_split", 1)[0] for path in files})
    label_index = {label: index for index, label in enumerate(labels)}
    roles: dict[tuple[str, str], list[str]] = {}
    for path in files:
        label, split = path.stem.rsplit("_test_split", 1)
        for line in _read_lines(path):
            name, code = line.split()
            if code not in HMDB_ROLES:
                raise DatasetError(f"{path}: line {line!r} has role {code!r}, expected 0, 1 or 2")
            roles.setdefault((label, name), ["unused"] * 3)[int(split) - 1] = HMDB_ROLES[code]
    entries = [
        VideoEntry(Path(name).stem, label, label_index[label], f"{label}/{name}", tuple(video_roles))
        for (label, name), video_roles in roles.items()
    ]
    return _check_unique(entries)


KINETICS_ROLES = {"train": "train", "validate": "val", "val": "val", "test": "test"}


def list_kinetics(annotations: list[Path]) -> list[VideoEntry]:
    """Kinetics-400 from annotation CSVs ``label,youtube_id,time_start,time_end,split``.

    Files are ``<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``; labels are numbered in
    sorted order over every annotation file given.
    """
    rows = []
    for path in annotations:
        if not path.is_file():
            raise DatasetError(f"{path}: Kinetics annotation CSV not found")
        with open(path, newline="") as handle:
            # csv.reader and column positions: DictReader doubles the planning time of 240k clips
            reader = csv.reader(handle)
            header = next(reader, [])
            missing = sorted({"label", "youtube_id", "time_start", "time_end", "split"} - set(header))
            if missing:
                raise DatasetError(f"{path}: columns {missing} missing from the header")
            columns = [header.index(name) for name in ("label", "youtube_id", "time_start", "time_end", "split")]
            for line, row in enumerate(reader, start=2):
                label, youtube_id, start, end, split = (row[column] for column in columns)
                if split not in KINETICS_ROLES:
                    raise DatasetError(f"{path}: line {line}: split {split!r} is not train, validate or test")
                rows.append((label, f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}", split))
    label_index = {label: index for index, label in enumerate(sorted({row[0] for row in rows}))}
    entries = [VideoEntry(stem, label, label_index[label], f"{label}/{stem}.mp4", (KINETICS_ROLES[split],))
               for label, stem, split in rows]
    return _check_unique(entries)


# layouts without split files: their splits come from stratified_roles
STRATIFIED_LAYOUTS = ("folder", "demo")


def held_out_every(test_fraction: float) -> int:
    """k of stratified_roles: every k-th video of a class is tested on (0: none)."""
    return max(2, round(1 / test_fraction)) if test_fraction > 0 else 0


def stratified_roles(names_by_label: dict[str, list[str]], test_fraction: float) -> dict[str, tuple[str, ...]]:
    """A deterministic split for datasets without split files, in three rotations (splits
    1-3): in each class (sorted by name), every k-th video goes to test, k =
    round(1 / test_fraction), and split s takes the videos at positions k - s, 2k - s, ...
    (mod k), so the three splits test on disjoint videos where a class has enough of them.
    Above one half, the other way round: every k-th video trains, k = round(1 / (1 - test_fraction))."""
    roles = {}
    mostly_test = test_fraction > 0.5
    every = held_out_every(1 - test_fraction) if mostly_test else held_out_every(test_fraction)
    chosen, other = ("train", "test") if mostly_test else ("test", "train")
    for names in names_by_label.values():
        for position, name in enumerate(sorted(names)):
            roles[name] = tuple(chosen if every and position % every == (every - split) % every else other
                                for split in (1, 2, 3))
    return roles


def _entries_from_class_folders(relpaths_by_label: dict[str, list[str]], test_fraction: float) -> list[VideoEntry]:
    labels = sorted(relpaths_by_label)
    roles = stratified_roles(relpaths_by_label, test_fraction)
    entries = [
        VideoEntry(Path(relpath).stem, label, index, relpath, roles[relpath])
        for index, label in enumerate(labels)
        for relpath in relpaths_by_label[label]
    ]
    return _check_unique(entries)


def list_folder(root: Path, test_fraction: float) -> list[VideoEntry]:
    """Any folder of class folders: ``<root>/<class>/<video>``; video ids are file stems."""
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    relpaths_by_label = {}
    for class_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        videos = sorted(
            f"{class_dir.name}/{path.name}" for path in class_dir.iterdir() if path.suffix.lower() in VIDEO_EXTENSIONS
        )
        if videos:
            relpaths_by_label[class_dir.name] = videos
    if not relpaths_by_label:
        raise DatasetError(f"{root}: no class folders with videos ({', '.join(VIDEO_EXTENSIONS)}) found")
    return _entries_from_class_folders(relpaths_by_label, test_fraction)


def list_demo(demo_config: dict, test_fraction: float) -> list[VideoEntry]:
    """The embedded demo dataset, listed from its config before it is generated."""
    from cocon.data.demo import demo_video_names

    relpaths_by_label: dict[str, list[str]] = {}
    for label, stem in demo_video_names(demo_config["num_classes"], demo_config["videos_per_class"],
                                        demo_config["classes"]):
        relpaths_by_label.setdefault(label, []).append(f"{label}/{stem}.avi")
    return _entries_from_class_folders(relpaths_by_label, test_fraction)


# each layout's lister, and the config key naming the folder or files it reads
LISTERS = {
    "ucf101": ("splits", lambda dataset: list_ucf101(Path(dataset["splits"]))),
    "hmdb51": ("splits", lambda dataset: list_hmdb51(Path(dataset["splits"]))),
    "kinetics400": ("annotations", lambda dataset: list_kinetics([Path(path) for path in dataset["annotations"]])),
    "folder": ("root", lambda dataset: list_folder(Path(dataset["root"]), dataset["test_fraction"])),
    "demo": ("demo", lambda dataset: list_demo(dataset["demo"], dataset["test_fraction"])),
}


def check_folders(dataset: dict) -> None:
    """The folders and files a dataset config names exist; a DatasetError names the key.

    The demo's root is generated, so only the other layouts' root must exist; where the
    frames are imported, videos are optional, and their import tree must exist instead."""
    from cocon.data.trees import TreeError, check_root

    frames_import = dataset.get("frames", {}).get("import")
    if dataset["layout"] != "demo" and (dataset.get("root") or not frames_import) \
            and not Path(dataset["root"]).is_dir():
        raise DatasetError(f"root: {dataset['root']}: folder not found")
    for section in ("frames", "flow"):
        settings = dataset.get(section, {}).get("import")
        if settings:
            try:
                check_root(settings, f"{section}.import")
            except TreeError as error:
                raise DatasetError(str(error)) from None
    if dataset["layout"] in ("ucf101", "hmdb51") and not Path(dataset["splits"]).is_dir():
        raise DatasetError(f"splits: {dataset['splits']}: folder not found")
    if dataset["layout"] == "kinetics400":
        for path in dataset["annotations"]:
            if not Path(path).is_file():
                raise DatasetError(f"annotations: {path}: Kinetics annotation CSV not found")


def list_videos(dataset: dict) -> list[VideoEntry]:
    """Every video a validated dataset config names, sorted by id, restricted to
    ``classes`` when that key is set. Errors name the config key at fault."""
    if dataset["layout"] not in LISTERS:
        raise DatasetError(f"layout: unknown layout {dataset['layout']!r}")
    check_folders(dataset)
    key, lister = LISTERS[dataset["layout"]]
    try:
        entries = lister(dataset)
    except DatasetError as error:
        raise DatasetError(f"{key}: {error}") from None
    classes = dataset.get("classes")
    if classes:
        known = {entry.label for entry in entries}
        unknown = sorted(set(classes) - known)
        if unknown:
            raise DatasetError(f"classes: {unknown} are not classes of this dataset")
        entries = [entry for entry in entries if entry.label in set(classes)]
    return entries


def role_counts(entries: list[VideoEntry], split: int) -> Counter:
    """How many of ``entries`` take each role (train, test, ...) in ``split`` (from 1)."""
    return Counter(entry.splits[split - 1] for entry in entries)


def _no_test_video_reason(dataset: dict, entries: list[VideoEntry], split: int) -> str:
    """Why the listing gives ``split`` no test video, naming the key to change."""
    layout = dataset["layout"]
    if layout in STRATIFIED_LAYOUTS:
        test_fraction = dataset["test_fraction"]
        if test_fraction > 0.5:
            return f"test_fraction: {test_fraction} trains on every {held_out_every(1 - test_fraction)}th video and " \
                   "tests on the others, but no class has a second video"
        every = held_out_every(test_fraction)
        if not every:
            return f"test_fraction: {test_fraction} holds out no video of any class as test"
        position = (every - split) % every
        largest = max(Counter(entry.label for entry in entries).values())
        return (f"test_fraction: {test_fraction} holds out video {position + 1} (in name order) of each class "
                f"in split {split}, and no class has {position + 1} videos (the largest has {largest}); raise "
                "test_fraction or add videos")
    if layout == "kinetics400":
        return "annotations: no row has split 'test' (the 'validate' rows are not tested on)"
    return f"splits: the split files name no test video of these classes in split {split}"


def check_training_split(dataset: dict, entries: list[VideoEntry], split: int, stage: str) -> None:
    """Before a training job of ``stage`` (pretrain or finetune) on ``split`` is planned:
    the listing holds one batch of train videos (listed videos are an upper bound on the
    usable ones), and, to fine-tune, a test video. A DatasetError names the key."""
    counts = role_counts(entries, split)
    if stage == "finetune" and not counts["test"]:
        raise DatasetError(f"{_no_test_video_reason(dataset, entries, split)}; fine-tuning tests on split "
                           f"{split} (official_splits: {dataset['official_splits']})")
    settings = dataset[stage]
    processes = settings["gpus"] if stage == "pretrain" and settings["gpus"] > 1 else 1
    batch = settings["batch_size"] * processes
    if counts["train"] >= batch:
        return
    if not counts["train"] and dataset["layout"] in STRATIFIED_LAYOUTS:
        largest = max(Counter(entry.label for entry in entries).values())
        raise DatasetError(f"test_fraction: {dataset['test_fraction']} leaves split {split} no train video: each "
                           f"class is held out whole (the largest has {largest} videos); lower test_fraction or "
                           "add videos")
    per_process = f" ({settings['batch_size']} per GPU x {processes} GPUs)" if processes > 1 else ""
    raise DatasetError(f"{stage}.batch_size: one batch of {batch}{per_process} needs more train videos than the "
                       f"{counts['train']} that split {split} lists; lower {stage}.batch_size or add videos "
                       f"(official_splits: {dataset['official_splits']})")


def check_alignment_pairs(dataset: dict, entries: list[VideoEntry], split: int) -> None:
    """Before the analyses of ``split`` are planned: every video of ``analysis.alignment_pairs``
    is a listed test video of that split. A DatasetError names the key and the videos."""
    roles = {entry.video_id: entry.splits[split - 1] for entry in entries}
    wrong = [video for pair in dataset["analysis"]["alignment_pairs"] or [] for video in pair
             if roles.get(video) != "test"]
    if wrong:
        raise DatasetError(f"analysis.alignment_pairs: {', '.join(wrong)} are not listed test videos of split {split}")


def shard_name(index: int) -> str:
    return f"{index:05d}"


def assign_shards(entries: list[VideoEntry], shard_size: int) -> dict[str, list[VideoEntry]]:
    """Consecutive runs of ``shard_size`` videos (in id order) form the shards."""
    shards: dict[str, list[VideoEntry]] = {}
    for position, entry in enumerate(entries):
        shards.setdefault(shard_name(position // shard_size), []).append(entry)
    return shards


@lru_cache(maxsize=4096)
def _videos_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        path.stem.lower(): path
        for path in sorted(folder.iterdir(), reverse=True)
        if path.suffix.lower() in VIDEO_EXTENSIONS
    }


def resolve_path(root: Path, relpath: str) -> Path:
    """Where a listed video is on disk: the published path, else the same stem with
    another video extension or letter case in its class folder (re-encoded copies), or
    in a class folder spelled with underscores for spaces (Kinetics downloaders differ).
    Returns the published path when nothing matches."""
    published = root / relpath
    if published.exists():
        return published
    for folder in (published.parent, published.parent.with_name(published.parent.name.replace(" ", "_"))):
        found = _videos_by_stem(folder).get(published.stem.lower())
        if found is not None:
            return found
    return published
