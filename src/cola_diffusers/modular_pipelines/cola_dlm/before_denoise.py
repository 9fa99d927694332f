import torch
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam

from ...models.attention_cola import ColaKVCache
from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...pipelines.cola_dlm.generation import ColaDLMLayout, prefill_caches, prepare_latents
from .modular_pipeline import ColaDLMModularPipeline


class ColaDLMPrepareStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Prepare step that lays out the prompt prefixes (whole blocks of prompt latents) and the generated blocks "
            "in the key/value caches, with the rest of every prompt repainted into the first block; prefills the DiT "
            "and VAE decoder caches with the prefixes, and prepares the noise and the output buffers."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [
            ComponentSpec("transformer", ColaTransformer1DModel),
            ComponentSpec("vae", AutoencoderKLColaText),
        ]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("prompt_latents", required=True, type_hint=torch.Tensor, description="The prompt latents."),
            InputParam(
                "num_prompt_tokens", required=True, type_hint=torch.LongTensor, description="Tokens of every prompt."
            ),
            InputParam("gen_length", type_hint=int, default=32, description="Number of new tokens per prompt."),
            InputParam("block_length", required=True, type_hint=int, description="Latents per generated block."),
            InputParam("pad_token_id", required=True, type_hint=int, description="The pad token."),
            InputParam.template(
                "latents",
                description=(
                    "Starting noise of every block, `(batch_size, num_blocks * block_length, latent_dim)`, block `b` "
                    "at positions `[b * block_length, (b + 1) * block_length)`."
                ),
            ),
            InputParam.template("generator"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("layout", type_hint=ColaDLMLayout, description="Where prompts and blocks sit in the caches."),
            OutputParam("transformer_cache", type_hint=ColaKVCache, description="The DiT's key/value cache."),
            OutputParam("vae_cache", type_hint=ColaKVCache, description="The VAE decoder's key/value cache."),
            OutputParam("latents", type_hint=torch.Tensor, description="The starting noise of every block, fp32."),
            OutputParam(
                "clean_latents", type_hint=torch.Tensor, description="The clean latents of the generated blocks."
            ),
            OutputParam(
                "tokens",
                type_hint=torch.LongTensor,
                description="The tokens sampled in every block, `(batch_size, num_blocks * tokens_per_block)`.",
            ),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, state: PipelineState
    ) -> tuple[ColaDLMModularPipeline, PipelineState]:
        block_state = self.get_block_state(state)
        layout = ColaDLMLayout.from_prompts(
            block_state.prompt_latents,
            block_state.num_prompt_tokens,
            block_state.gen_length,
            block_state.block_length,
            components.vae.config.patch_size,
            components.vae.config.block_size,
        )
        block_state.transformer_cache, block_state.vae_cache = prefill_caches(
            components.transformer, components.vae, layout, block_state.prompt_latents
        )
        block_state.latents = prepare_latents(
            components.transformer,
            layout.batch_size,
            layout.num_blocks * layout.block_length,
            block_state.generator,
            components._execution_device,
            block_state.latents,
        )
        block_state.clean_latents = torch.zeros_like(block_state.latents)
        block_state.tokens = layout.empty_tokens(block_state.pad_token_id)
        block_state.layout = layout
        self.set_block_state(state, block_state)
        return components, state
