"""Training of Cola-DLM: Stage 1 (Text VAE) and Stage 2 (flow-matching prior), on accelerate."""

import importlib

from .config import TrainingConfig


# Imported on first use, so that reading and checking a `TrainingConfig` needs no torch.
_EXPORTS = {
    "prior_loss": ".losses",
    "sample_logit_normal": ".losses",
    "two_block_layout_mask": ".losses",
    "vae_loss": ".losses",
}
__all__ = ["TrainingConfig", "prior_loss", "sample_logit_normal", "train", "two_block_layout_mask", "vae_loss"]


def train(config: TrainingConfig):
    """Trains the configured stage; see `cola_diffusers.training.trainer.train`."""
    from .trainer import train as run

    return run(config)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
