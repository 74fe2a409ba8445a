"""CoCon: Cooperative-Contrastive Learning for video, from raw videos to results."""

__version__ = "0.1.0"
