"""Training of Cola-DLM: Stage 1 (Text VAE) and Stage 2 (flow-matching prior), on accelerate."""

from ..lazy import lazy_exports
from .config import TrainingConfig


# Imported on first use, so that reading and checking a `TrainingConfig` needs no torch.
_EXPORTS = {
    "prior_loss": ".losses",
    "sample_logit_normal": ".losses",
    "train": ".trainer",
    "two_block_layout_mask": ".losses",
    "vae_loss": ".losses",
}
__all__ = ["TrainingConfig", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
