"""Training: pretraining (CPC per view, CoCon jointly), checkpoints, distributed helpers."""
