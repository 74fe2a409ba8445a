"""Dense Predictive Coding (DPC) model, and its L2-normalised CoCon variant."""

import torch
import torch.nn.functional as F
from torch import nn

from cocon.models.convgru import ConvGRU
from cocon.models.resnet2d3d import ENCODERS


class DPC(nn.Module):
    """Encoder f, ConvGRU aggregator g and predictor phi (DESIGN.md section 4).

    Input `[B, N, C, K, H, W]`: N blocks of K frames. Each block is encoded and
    averaged over time into z `[B, N, D, S, S]`. g reads the first N - P blocks into a
    context c; then P times z~ = phi(c), c = g(z~, c), predicting the last P blocks.

    With `normalize=False` this is plain DPC: the targets are the encoder output as is,
    and g reads ReLU'd features, as in the authors' code. With `normalize=True` (CoCon)
    z, the context and the predictions are L2-normalised over D at each location, and g
    reads them without the ReLU, which would otherwise undo the normalisation.
    """

    def __init__(
        self,
        backbone="resnet18",
        in_channels=3,
        num_blocks=8,
        pred_steps=3,
        normalize=False,
        width=1.0,
        hidden=None,
        dropout=0.1,
    ):
        super().__init__()
        if backbone not in ENCODERS:
            raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(ENCODERS)}")
        if not 0 < pred_steps < num_blocks:
            raise ValueError(
                f"need 0 < pred_steps < num_blocks, got pred_steps={pred_steps}, "
                f"num_blocks={num_blocks}"
            )
        self.num_blocks = num_blocks
        self.pred_steps = pred_steps
        self.normalize = normalize

        self.encoder = ENCODERS[backbone](in_channels=in_channels, width=width)
        self.feature_size = self.encoder.feature_size
        self.hidden_size = self.feature_size if hidden is None else hidden
        self.aggregator = ConvGRU(
            self.feature_size, self.hidden_size, kernel_size=1, dropout=dropout
        )
        self.predictor = nn.Sequential(
            nn.Conv2d(self.hidden_size, self.feature_size, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.feature_size, self.feature_size, kernel_size=1),
        )
        for name, param in self.predictor.named_parameters():
            if name.endswith("weight"):
                nn.init.orthogonal_(param)
            else:
                nn.init.zeros_(param)

    def _l2_normalized(self, x, dim):
        # in float32 under bf16 autocast too (CPU autocast would keep bfloat16): the
        # normalised features feed cosines that the temperature scales up to about 200
        return F.normalize(x.float(), p=2, dim=dim) if self.normalize else x

    def _aggregator_input(self, z):
        return z if self.normalize else F.relu(z)

    def encode(self, blocks):
        """Block features z `[B, N, D, S, S]` of `blocks` `[B, N, C, K, H, W]`, any N."""
        if blocks.dim() != 6:
            raise ValueError(f"expected [B, N, C, K, H, W], got shape {tuple(blocks.shape)}")
        batch, num_blocks, channels, frames, height, width = blocks.shape
        features = self.encoder(blocks.reshape(batch * num_blocks, channels, frames, height, width))
        z = features.mean(dim=2)
        _, depth, rows, cols = z.shape
        assert depth == self.feature_size, (depth, self.feature_size)
        z = z.reshape(batch, num_blocks, depth, rows, cols)
        return self._l2_normalized(z, dim=2)

    def forward(self, blocks):
        """Returns pred `[B, P, D, S, S]`, gt `[B, P, D, S, S]` (z of the last P blocks)
        and z `[B, N, D, S, S]` of every block."""
        if blocks.dim() != 6 or blocks.shape[1] != self.num_blocks:
            raise ValueError(
                f"expected [B, {self.num_blocks}, C, K, H, W], got shape {tuple(blocks.shape)}"
            )
        z = self.encode(blocks)
        batch, num_blocks, depth, rows, cols = z.shape
        observed = num_blocks - self.pred_steps

        context = self.aggregator(self._aggregator_input(z[:, :observed]))
        context = self._l2_normalized(context, dim=1)
        assert context.shape == (batch, self.hidden_size, rows, cols), context.shape

        predictions = []
        for _ in range(self.pred_steps):
            prediction = self._l2_normalized(self.predictor(context), dim=1)
            predictions.append(prediction)
            context = self.aggregator(self._aggregator_input(prediction).unsqueeze(1), context)
            context = self._l2_normalized(context, dim=1)
        pred = torch.stack(predictions, dim=1)
        gt = z[:, observed:]
        assert pred.shape == gt.shape == (batch, self.pred_steps, depth, rows, cols), (
            pred.shape,
            gt.shape,
        )
        return pred, gt, z

    def context(self, blocks):
        """Context after g has read every block of `blocks` `[B, N, C, K, H, W]`:
        `[B, hidden, S, S]`, the feature that fine-tuning builds on.

        In DPC mode this is the forward of DPC's fine-tuning model (LC, `eval/model_3d_lc.py`):
        the ReLU of the encoder output comes before the mean over time, where pretraining
        takes the mean first (`dpc/model_3d.py`). The two orders differ wherever a location's
        features change sign over time, and a DPC encoder is fine-tuned and tested as DPC
        runs it. CoCon mode reads the L2-normalised z of pretraining, as `forward` does."""
        if self.normalize:
            return self._l2_normalized(self.aggregator(self.encode(blocks)), dim=1)
        if blocks.dim() != 6:
            raise ValueError(f"expected [B, N, C, K, H, W], got shape {tuple(blocks.shape)}")
        batch, num_blocks, channels, frames, height, width = blocks.shape
        features = F.relu(self.encoder(blocks.reshape(batch * num_blocks, channels, frames, height, width)))
        z = features.mean(dim=2)
        return self.aggregator(z.reshape(batch, num_blocks, *z.shape[1:]))
