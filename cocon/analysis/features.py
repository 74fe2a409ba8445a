"""Video features of a frozen encoder (DESIGN.md section 7), computed once per
(initialisation, view) and read by every analysis.

- ``context`` ``[videos, D]``: the context F(.) = g(f(.)) of every dense test window
  (``cocon.data.clips.dense_starts``: N blocks, half overlap, the central crop that testing
  uses), pooled over its S x S locations and averaged over the video's windows. Every
  video of the split has one: train and val videos are the retrieval gallery and the
  probe's training data, test videos the queries.
- ``blocks`` ``[test videos, 18, D]``: the block features z' for soft alignment: the
  test video's frames sampled evenly into 18 blocks of K frames, each block encoded by
  f, pooled over time, then over locations as Lsync and Lsim pool them
  (``cocon.losses.pool_blocks``: a 2x2 max-pool first when S = 4).

One ``.npz`` per (init, view) holds both with the video ids, labels and roles (train,
val, test; val is the fine-tuning validation part, carved as fine-tuning carves it).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cocon.data.clips import ClipDataset, ClipSpec, VideoRef, augment, clip_tensor, normalize, split_videos, \
    usable_frames
from cocon.data.shards import ShardReader
from cocon.losses import pool_blocks
from cocon.models import DPC
from cocon.train import checkpoints
from cocon.train.batchnorm import batchnorm_layers, recalibrate_statistics
from cocon.train.pretrain import build_model

log = logging.getLogger(__name__)

ALIGNMENT_BLOCKS = 18
ROLES = ("train", "val", "test")


@dataclass
class FeatureSet:
    """The features of one (init, view) on one split; arrays in video order."""

    init: str
    view: str
    split: int
    video_ids: np.ndarray       # [V] str
    labels: np.ndarray          # [V] int: official label index
    roles: np.ndarray           # [V] str: train, val or test
    context: np.ndarray         # [V, D] float32
    windows: np.ndarray         # [V] int: dense windows averaged into context
    block_video_ids: np.ndarray  # [T] str: the test videos, in the order of blocks
    blocks: np.ndarray          # [T, 18, D] float32
    checkpoint: str = ""        # the pretrained checkpoint ("" for random)

    def __post_init__(self):
        count = len(self.video_ids)
        assert self.labels.shape == (count,) and self.roles.shape == (count,), (self.labels.shape, self.roles.shape)
        assert self.context.ndim == 2 and self.context.shape[0] == count, self.context.shape
        assert self.blocks.ndim == 3 and self.blocks.shape[0] == len(self.block_video_ids), self.blocks.shape
        unknown = set(self.roles.tolist()) - set(ROLES)
        if unknown:
            raise ValueError(f"{self.init} {self.view}: unknown roles {sorted(unknown)}")

    def role(self, *roles: str) -> np.ndarray:
        """Boolean mask of the videos with one of ``roles``."""
        return np.isin(self.roles, roles)

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, init=self.init, view=self.view, split=self.split, video_ids=self.video_ids,
                     labels=self.labels, roles=self.roles, context=self.context, windows=self.windows,
                     block_video_ids=self.block_video_ids, blocks=self.blocks, checkpoint=self.checkpoint)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureSet":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: features not found (run `cocon features` or the features rule)")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(init=str(data["init"]), view=str(data["view"]), split=int(data["split"]),
                           video_ids=data["video_ids"], labels=data["labels"].astype(int), roles=data["roles"],
                           context=data["context"], windows=data["windows"],
                           block_video_ids=data["block_video_ids"], blocks=data["blocks"],
                           checkpoint=str(data["checkpoint"]))
        except (KeyError, ValueError, OSError) as error:
            raise ValueError(f"{path}: not a features file ({error})") from error


@dataclass
class FeaturesJob:
    dataset: dict
    init: str                  # random, or the initialisation `checkpoint` belongs to
    view: str
    views_dir: str
    manifest: str
    checkpoint: str | None     # pretrained checkpoint holding the view's model; None for random
    output: str
    split: int = 1
    batch_size: int = 16
    gpus: int = 0              # 0: CPU, 1: the first GPU
    threads: int | None = None
    # a random encoder's BatchNorm in eval mode normalises with the placeholder mean 0 and
    # variance 1, which no data has; True gives it statistics of the train windows instead,
    # as an imported checkpoint without statistics gets (bench.random_spread, README "Evidence")
    recalibrate_random: bool = False


def load_encoder(dataset: dict, view: str, checkpoint: str | None,
                 recalibrate_random: bool = False) -> tuple[DPC, dict]:
    """The frozen model of ``view`` in eval mode and the settings its clips need: the
    checkpoint's own (a UCF101 encoder analysed on HMDB51 keeps its geometry), or, for a
    random encoder, the dataset's, seeded by ``pretrain.seed``. ``without_statistics`` says
    whether its BatchNorm statistics are to be recalibrated: for a checkpoint that has none,
    and for a random encoder when ``recalibrate_random``."""
    if checkpoint:
        chosen = checkpoints.view_model(checkpoint, view)
        settings = chosen["model_config"]
        model = build_model(settings, view)
        checkpoints.load_weights(model, chosen, checkpoint)
        size = settings["input_size"]
        without_statistics = checkpoints.needs_recalibration(chosen)
    else:
        settings = dataset["pretrain"]
        torch.manual_seed(settings["seed"])
        model = build_model(settings, view)
        size = settings["input_size"][view]
        without_statistics = recalibrate_random
    model.requires_grad_(False)
    return model.eval(), {"spec": ClipSpec(settings["num_blocks"], settings["block_length"], settings["frame_stride"]),
                          "size": size, "without_statistics": without_statistics}


def recalibrate_encoder(model: DPC, train: list[VideoRef], job: FeaturesJob, geometry: dict,
                        device: torch.device) -> None:
    """BatchNorm statistics for an encoder that has none (an imported DPC pretraining file,
    or a random encoder when asked): eval mode would otherwise normalise with mean 0 and
    variance 1. They are averaged over up to ``finetune.bn_batches`` batches of the train
    videos' dense windows, cut as the features are, in an order seeded by ``finetune.seed``."""
    settings = job.dataset["finetune"]
    clips = ClipDataset(train, job.views_dir, [job.view], {job.view: geometry["size"]}, geometry["spec"],
                        train=False, center_crop=settings["center_crop"])
    loader = torch.utils.data.DataLoader(clips, batch_size=job.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(settings["seed"]))
    model.encoder.train()
    used = recalibrate_statistics(batchnorm_layers(model.encoder), loader,
                                  lambda batch: model.encode(batch[job.view].to(device)), settings["bn_batches"])
    model.eval()
    log.info("%s has no BatchNorm running statistics: recalibrated on %d batches of train windows",
             job.checkpoint or f"the random {job.view} encoder", used)


def alignment_indices(num_frames: int, block_length: int, num_blocks: int = ALIGNMENT_BLOCKS) -> np.ndarray:
    """Frame indices ``[num_blocks, block_length]``: the video's usable frames sampled
    evenly into ``num_blocks`` consecutive blocks (frames repeat in videos shorter than that)."""
    positions = np.linspace(0, usable_frames(num_frames) - 1, num_blocks * block_length)
    return np.round(positions).astype(int).reshape(num_blocks, block_length)


@torch.no_grad()
def context_features(model: DPC, clips: ClipDataset, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per video of ``clips`` (a dense test ClipDataset): the pooled context averaged over
    its windows ``[V, D]``, and its number of windows ``[V]``."""
    view = clips.views[0]
    loader = torch.utils.data.DataLoader(clips, batch_size=batch_size, shuffle=False)
    sums = torch.zeros(len(clips.videos), model.hidden_size, dtype=torch.float64)
    counts = torch.zeros(len(clips.videos), dtype=torch.long)
    for batch in loader:
        context = model.context(batch[view].to(device))
        assert context.shape[:2] == (len(batch["video"]), model.hidden_size), context.shape
        pooled = context.mean(dim=(2, 3)).double().cpu()
        sums.index_add_(0, batch["video"], pooled)
        counts.index_add_(0, batch["video"], torch.ones_like(batch["video"]))
    assert bool((counts > 0).all()), "a video without a window"
    return (sums / counts[:, None]).float().numpy(), counts.numpy()


@torch.no_grad()
def block_features(model: DPC, videos: list[VideoRef], views_dir, view: str, size: int, block_length: int,
                   center_crop: float, device: torch.device) -> np.ndarray:
    """z' ``[videos, 18, D]`` of ``videos`` (see alignment_indices), pooled by pool_blocks as
    the sync and sim losses see them."""
    features = []
    readers: dict[str, ShardReader] = {}
    try:
        for video in videos:
            if video.shard not in readers:
                readers[video.shard] = ShardReader(Path(views_dir) / view / f"{video.shard}.h5", view=view)
            indices = alignment_indices(video.num_frames, block_length)
            frames = readers[video.shard].read_frames(video.video_id, indices.reshape(-1))
            clip = normalize(view, augment(view, clip_tensor(view, frames), size, None, center_crop=center_crop))
            frames_count, channels, height, width = clip.shape
            blocks = clip.reshape(ALIGNMENT_BLOCKS, block_length, channels, height, width).transpose(1, 2)
            z = model.encode(blocks[None].to(device))
            assert z.dim() == 5 and z.shape[:3] == (1, ALIGNMENT_BLOCKS, model.feature_size), z.shape
            features.append(pool_blocks(z)[0].float().cpu().numpy())
    finally:
        for reader in readers.values():
            reader.close()
    if not features:
        return np.zeros((0, ALIGNMENT_BLOCKS, model.feature_size), dtype=np.float32)
    return np.stack(features)


def compute_features(job: FeaturesJob) -> FeatureSet:
    settings = job.dataset["finetune"]
    if job.threads:
        torch.set_num_threads(job.threads)
    device = torch.device("cuda" if job.gpus > 0 else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"analysis.gpus is {job.gpus} but CUDA is not available on this machine")
    model, geometry = load_encoder(job.dataset, job.view, job.checkpoint, job.recalibrate_random)
    model.to(device)
    train, val, test = split_videos(job.manifest, job.split, settings["val_fraction"], settings["seed"])
    if geometry["without_statistics"]:
        recalibrate_encoder(model, train, job, geometry, device)
    videos = train + val + test
    roles = ["train"] * len(train) + ["val"] * len(val) + ["test"] * len(test)
    started = time.perf_counter()
    clips = ClipDataset(videos, job.views_dir, [job.view], {job.view: geometry["size"]}, geometry["spec"],
                        train=False, center_crop=settings["center_crop"])
    context, windows = context_features(model, clips, job.batch_size, device)
    context_seconds = time.perf_counter() - started
    blocks = block_features(model, test, job.views_dir, job.view, geometry["size"], geometry["spec"].block_length,
                            settings["center_crop"], device)
    log.info("%s %s split %d: %d videos (%d windows) in %.1f s, block features of %d test videos in %.1f s",
             job.init, job.view, job.split, len(videos), int(windows.sum()), context_seconds, len(test),
             time.perf_counter() - started - context_seconds)
    return FeatureSet(init=job.init, view=job.view, split=job.split,
                      video_ids=np.array([video.video_id for video in videos]),
                      labels=np.array([video.label_index for video in videos]), roles=np.array(roles),
                      context=context, windows=windows, block_video_ids=np.array([video.video_id for video in test], dtype=str),
                      blocks=blocks, checkpoint=job.checkpoint or "")


def run_features(job: FeaturesJob) -> FeatureSet:
    features = compute_features(job)
    features.save(job.output)
    log.info("wrote %s", job.output)
    return features
