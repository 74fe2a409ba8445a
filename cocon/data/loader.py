"""The training loader: batches of a ClipDataset on the training device, made as
``pretrain.loader`` (``finetune.loader``) says.

- ``cpu``: the loader workers make ClipDataset's clips (decode, crop, resize, jitter) and
  the batch is moved to the device.
- ``device``: the workers only read the stored bytes and draw the augmentation
  (cocon.data.device_clips.StoredClips); the training process decodes and augments the
  whole batch on the device (DeviceClips), with the same draws.

Either way every batch holds ``{view: [B, N, C, K, S, S], "label": [B]}`` on the device and
``"video"`` on the host, for the same keys in the same order.
"""
from __future__ import annotations

import weakref

import torch

from cocon.data.clips import ClipDataset
from cocon.data.device_clips import DeviceClips, StoredClips, collate_stored

LOADERS = ("cpu", "device")


def _end_workers(batches: torch.utils.data.DataLoader) -> None:
    """Drop the DataLoader's iterator, whose finaliser shuts its persistent workers down (a
    DataLoader has no public way to end them)."""
    batches._iterator = None


class ClipBatches:
    """Iterates over ``dataset``'s batches on ``device``; ``options`` are the DataLoader's
    (batch_size or batch_sampler, sampler, num_workers, ...)."""

    def __init__(self, dataset: ClipDataset, loader: str, device: torch.device, **options):
        if loader not in LOADERS:
            raise ValueError(f"loader {loader!r} is not one of {LOADERS}")
        self.dataset, self.device = dataset, device
        if loader == "device":
            self.batches = torch.utils.data.DataLoader(StoredClips(dataset), collate_fn=collate_stored, **options)
            self.device_clips = DeviceClips(dataset, device)
        else:
            self.batches = torch.utils.data.DataLoader(dataset, **options)
            self.device_clips = None
        # the persistent workers end with this object, in order, however it is freed. Freed
        # by the cycle collector (a stop signal's traceback keeps the training's frames), the
        # DataLoader's queues could be finalised before its iterator, which then could not
        # tell its workers to stop; and they ignore SIGTERM (a SLURM job step's signal is the
        # training process's to answer), so the process's exit would wait on them for ever.
        # A finalizer holds the DataLoader, so its queues stay alive until it drops the
        # iterator; it also runs at exit, before multiprocessing joins its children.
        self.close = weakref.finalize(self, _end_workers, self.batches)

    def _moved(self, batch: dict) -> dict:
        moved = {view: batch[view].to(self.device, non_blocking=True) for view in self.dataset.views}
        return {**batch, **moved, "label": batch["label"].to(self.device, non_blocking=True)}

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield self._moved(batch) if self.device_clips is None else self.device_clips(batch)
