"""Cola-DLM, the continuous latent diffusion language model, as a diffusers plugin."""

from .models.attention_cola import ColaKVCache, block_causal_mask
from .models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from .models.transformers.transformer_cola import ColaTimestepModulation, ColaTransformer1DModel
from .modular_pipelines import ColaDLMBlocks, ColaDLMModularPipeline
from .pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .pipelines.cola_dlm.pipeline_output import ColaDLMPipelineOutput, ColaDLMStreamChunk
from .schedulers.scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler


__version__ = "0.1.0"

__all__ = [
    "AutoencoderKLColaText",
    "ColaDLMBlocks",
    "ColaDLMModularPipeline",
    "ColaDLMPipeline",
    "ColaDLMPipelineOutput",
    "ColaDLMStreamChunk",
    "ColaKVCache",
    "ColaTimestepModulation",
    "ColaTransformer1DModel",
    "FlowMatchBlockCausalScheduler",
    "block_causal_mask",
]
