"""Convolutional GRU: the aggregator g of DPC."""

import torch
from torch import nn


class ConvGRUCell(nn.Module):
    """One GRU step whose gates are convolutions, so every location keeps its own state."""

    def __init__(self, input_size, hidden_size, kernel_size=1):
        super().__init__()
        self.hidden_size = hidden_size
        padding = kernel_size // 2
        combined = input_size + hidden_size
        self.reset_gate = nn.Conv2d(combined, hidden_size, kernel_size, padding=padding)
        self.update_gate = nn.Conv2d(combined, hidden_size, kernel_size, padding=padding)
        self.out_gate = nn.Conv2d(combined, hidden_size, kernel_size, padding=padding)
        for gate in (self.reset_gate, self.update_gate, self.out_gate):
            nn.init.orthogonal_(gate.weight)
            nn.init.zeros_(gate.bias)

    def forward(self, x, hidden):
        combined = torch.cat([x, hidden], dim=1)
        update = torch.sigmoid(self.update_gate(combined))
        reset = torch.sigmoid(self.reset_gate(combined))
        candidate = torch.tanh(self.out_gate(torch.cat([x, hidden * reset], dim=1)))
        return hidden * (1 - update) + candidate * update


class ConvGRU(nn.Module):
    """One ConvGRU layer over a sequence of feature maps.

    Dropout is applied to the state after every step (as DPC does), and the dropped-out
    state is what the next step reads.
    """

    def __init__(self, input_size, hidden_size=256, kernel_size=1, dropout=0.1):
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = ConvGRUCell(input_size, hidden_size, kernel_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, inputs, hidden=None):
        """`inputs` `[B, T, C, H, W]`, `hidden` `[B, hidden_size, H, W]` or None (zeros).

        Returns the state after the last step, `[B, hidden_size, H, W]`.
        """
        if inputs.dim() != 5:
            raise ValueError(f"expected [B, T, C, H, W], got shape {tuple(inputs.shape)}")
        batch, steps, _, height, width = inputs.shape
        if hidden is None:
            hidden = inputs.new_zeros(batch, self.hidden_size, height, width)
        for step in range(steps):
            hidden = self.dropout(self.cell(inputs[:, step], hidden))
        return hidden
