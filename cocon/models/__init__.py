"""Models: the ResNet-2d3d encoders, the ConvGRU aggregator, DPC, and the fine-tuning classifier."""

from cocon.models.classifier import Classifier
from cocon.models.convgru import ConvGRU, ConvGRUCell
from cocon.models.dpc import DPC
from cocon.models.resnet2d3d import ENCODERS, ResNet2d3d, resnet18_2d3d, resnet34_2d3d

__all__ = [
    "Classifier",
    "DPC",
    "ENCODERS",
    "ConvGRU",
    "ConvGRUCell",
    "ResNet2d3d",
    "resnet18_2d3d",
    "resnet34_2d3d",
]
