"""An OpenAI-compatible server for [`ColaDLMPipeline`] (`pip install "cola-diffusers[serve]"`)."""

from .app import create_app
from .engine import GenerationEngine


__all__ = ["GenerationEngine", "create_app"]
