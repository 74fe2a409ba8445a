"""The fine-tuning model: F = g(f(.)) -> spatial pool -> BatchNorm1d -> dropout -> linear,
DPC's and CoCon's LC head (DESIGN.md section 6)."""
from __future__ import annotations

import torch
from torch import nn

from cocon.models.dpc import DPC


class Classifier(nn.Module):
    """The encoder f and aggregator g of a DPC model, read over every block of the clip;
    the context is averaged over locations, batch-normalised and classified. The predictor
    gets no gradient (it is not on this path), so the optimizer leaves it as pretrained."""

    def __init__(self, backbone: DPC, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.hidden_size
        # PyTorch's BatchNorm1d starts at weight 1, bias 0, as DPC sets its final_bn
        self.head = nn.Sequential(nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        # DPC initialises its final_fc as its other layers: orthogonal weight, zero bias
        linear = self.head[-1]
        nn.init.orthogonal_(linear.weight)
        nn.init.zeros_(linear.bias)

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        """``blocks`` ``[B, N, C, K, H, W]`` -> class logits ``[B, num_classes]``."""
        context = self.backbone.context(blocks)
        batch, hidden = context.shape[:2]
        pooled = context.mean(dim=(2, 3))
        assert pooled.shape == (batch, hidden), pooled.shape
        return self.head(pooled)
