"""The fine-tuning model: F = g(f(.)) -> spatial pool -> dropout -> linear (DESIGN.md section 6)."""
from __future__ import annotations

import torch
from torch import nn

from cocon.models.dpc import DPC


class Classifier(nn.Module):
    """The encoder f and aggregator g of a DPC model, read over every block of the clip;
    the context is averaged over locations and classified. The predictor gets no gradient
    (it is not on this path), so the optimizer leaves it as pretrained."""

    def __init__(self, backbone: DPC, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.hidden_size, num_classes))

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        """``blocks`` ``[B, N, C, K, H, W]`` -> class logits ``[B, num_classes]``."""
        context = self.backbone.context(blocks)
        batch, hidden = context.shape[:2]
        pooled = context.mean(dim=(2, 3))
        assert pooled.shape == (batch, hidden), pooled.shape
        return self.head(pooled)
