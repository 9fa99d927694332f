"""Training of Cola-DLM: Stage 1 (Text VAE) and Stage 2 (flow-matching prior), on accelerate."""

from .losses import prior_loss, sample_logit_normal, two_block_layout_mask, vae_loss
from .trainer import TrainingConfig, train


__all__ = ["TrainingConfig", "prior_loss", "sample_logit_normal", "train", "two_block_layout_mask", "vae_loss"]
