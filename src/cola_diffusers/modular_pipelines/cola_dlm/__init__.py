from .modular_blocks_cola_dlm import ColaDLMBlocks
from .modular_pipeline import ColaDLMModularPipeline


__all__ = ["ColaDLMBlocks", "ColaDLMModularPipeline"]
