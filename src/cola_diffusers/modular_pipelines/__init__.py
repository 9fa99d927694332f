from .cola_dlm import ColaDLMBlocks, ColaDLMModularPipeline


__all__ = ["ColaDLMBlocks", "ColaDLMModularPipeline"]
