"""An epoch's per-step values (loss terms, accuracies) summed on the training device.

Reading a value of a GPU tensor on the host (``float(loss)``, ``if torch.isfinite(loss)``)
waits for every kernel queued before it, so the CPU could not queue the next step while
the GPU runs this one. Here a step only queues kernels: its values are added to sums kept
on the device, in float64 (the same numbers as Python floats summing float32 values), its
watched values (the losses) are written to a window of the last steps, and one device flag
records whether all of them were finite. The host reads the sums and the flag together in
one transfer, once every ``window`` steps (the logging interval), at the end of the epoch
and before any state is saved, so that a state never holds weights that a non-finite loss
made. A non-finite loss then raises ``on_non_finite(step, values)`` for the first step whose
watched values were not finite, read from the window: every step since the last read is
still there.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


class StepMetrics:
    def __init__(self, device: torch.device, window: int,
                 on_non_finite: Callable[[int, dict[str, float]], Exception], resumed: dict[str, float] | None = None):
        """``resumed``: the sums of the steps of the epoch run before a resume."""
        self.device, self.window, self.on_non_finite = device, window, on_non_finite
        self.resumed = dict(resumed or {})
        self.summed_names: list[str] | None = None
        self.watched_names: list[str] | None = None
        self.sums = self.recent = self.finite = None
        self.recent_steps: list[int] = []

    def _start(self, summed: dict[str, torch.Tensor], watched: dict[str, torch.Tensor]) -> None:
        self.summed_names, self.watched_names = list(summed), list(watched)
        if self.resumed and set(self.resumed) != set(self.summed_names):
            raise ValueError(f"resumed sums of {sorted(self.resumed)}, but this run sums {sorted(self.summed_names)}")
        self.sums = torch.tensor([self.resumed.get(name, 0.0) for name in self.summed_names], dtype=torch.float64,
                                 device=self.device)
        self.recent = torch.zeros(self.window, len(self.watched_names), dtype=torch.float64, device=self.device)
        self.finite = torch.ones((), dtype=torch.bool, device=self.device)

    def add(self, step: int, summed: dict[str, torch.Tensor], watched: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """Add step ``step``'s ``summed`` values (scalar tensors) and watch ``watched`` ones for
        finiteness, without waiting for the device. When the window is full, the sums are read
        (and checked) and returned; None otherwise."""
        if self.sums is None:
            self._start(summed, watched)
        self.sums += torch.stack([summed[name].detach().to(torch.float64) for name in self.summed_names])
        values = torch.stack([watched[name].detach().to(torch.float64) for name in self.watched_names])
        self.recent[len(self.recent_steps)] = values
        self.finite &= torch.isfinite(values).all()
        self.recent_steps.append(step)
        if len(self.recent_steps) == self.window:
            return self.read()
        return None

    def read(self) -> dict[str, float]:
        """The sums so far, read from the device with the finiteness flag in one transfer;
        raises ``on_non_finite`` for the first non-finite step since the last read."""
        if self.sums is None:
            return dict(self.resumed)
        host = torch.cat([self.sums, self.finite.to(torch.float64)[None]]).tolist()
        if not host[-1]:
            recent = self.recent[:len(self.recent_steps)].tolist()
            for step, values in zip(self.recent_steps, recent):
                if not all(math.isfinite(value) for value in values):
                    raise self.on_non_finite(step, dict(zip(self.watched_names, values)))
        self.recent_steps = []
        return dict(zip(self.summed_names, host[:-1]))
