import torch
from diffusers.modular_pipelines import BlockState, ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam
from transformers import PreTrainedTokenizerFast

from ...models.attention_cola import ColaKVCache
from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...pipelines.cola_dlm.generation import (
    ColaDLMBlock,
    ColaDLMLayout,
    decode_block,
    pad_sequences,
    truncate_new_tokens,
)
from .modular_pipeline import ColaDLMModularPipeline


class ColaDLMBlockDecodeStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Decode step inside the block loop: decodes the clean block with the VAE decoder (appending it to the "
            "decoder cache), samples its tokens and cuts the new tokens of every prompt at its first stop."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [
            ComponentSpec("vae", AutoencoderKLColaText),
            ComponentSpec("tokenizer", PreTrainedTokenizerFast),
        ]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("block", required=True, type_hint=ColaDLMBlock, description="The current block."),
            InputParam("block_latents", required=True, type_hint=torch.Tensor, description="Its clean latents."),
            InputParam("layout", required=True, type_hint=ColaDLMLayout, description="The cache layout."),
            InputParam("vae_cache", required=True, type_hint=ColaKVCache, description="The VAE decoder's cache."),
            InputParam("clean_latents", required=True, type_hint=torch.Tensor, description="Clean latents buffer."),
            InputParam("tokens", required=True, type_hint=torch.LongTensor, description="Sampled tokens buffer."),
            InputParam("gen_length", type_hint=int, default=32, description="Number of new tokens per prompt."),
            InputParam("temperature", type_hint=float, default=0.0, description="Sampling temperature; 0 is greedy."),
            InputParam("top_k", type_hint=int, description="Top-k filter when `temperature > 0`."),
            InputParam("top_p", type_hint=float, description="Top-p filter when `temperature > 0`."),
            InputParam(
                "repetition_penalty",
                type_hint=float,
                default=1.1,
                description="Penalty of tokens sampled in earlier blocks.",
            ),
            InputParam.template("generator"),
            InputParam("stop", type_hint=list[str], description="Stop strings."),
            InputParam("stop_token_ids", required=True, type_hint=list[int], description="Stop tokens."),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam(
                "truncated",
                type_hint=list[tuple[list[int], str, bool]],
                description="Per prompt, `(token_ids, text, stopped)` of its new tokens, cut at the first stop.",
            ),
            OutputParam("finished", type_hint=bool, description="Whether every prompt has stopped."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, block_state: BlockState, block_index: int
    ) -> tuple[ColaDLMModularPipeline, BlockState]:
        block = block_state.block
        block_state.clean_latents[:, block.latent_slice] = block_state.block_latents
        decode_block(
            components.vae,
            block,
            block_state.block_latents,
            block_state.vae_cache,
            block_state.tokens,
            block_state.temperature,
            block_state.top_k,
            block_state.top_p,
            block_state.repetition_penalty,
            block_state.generator,
        )
        block_state.truncated = truncate_new_tokens(
            components.tokenizer,
            block_state.tokens,
            block_state.layout,
            block.token_slice.stop,
            block_state.gen_length,
            block_state.stop_token_ids,
            block_state.stop,
        )
        block_state.finished = all(stopped for _, _, stopped in block_state.truncated)
        return components, block_state


class ColaDLMOutputStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Output step that pads the new tokens of every prompt to `gen_length` and returns them with their texts "
            "and the clean latents of the generated blocks."
        )

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam(
                "truncated",
                required=True,
                type_hint=list[tuple[list[int], str, bool]],
                description="Per prompt, `(token_ids, text, stopped)` of its new tokens.",
            ),
            InputParam("clean_latents", required=True, type_hint=torch.Tensor, description="The clean latents."),
            InputParam("gen_length", type_hint=int, default=32, description="Number of new tokens per prompt."),
            InputParam("pad_token_id", required=True, type_hint=int, description="The pad token."),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam(
                "sequences",
                type_hint=torch.LongTensor,
                description="The new token ids, `(batch_size, gen_length)`, padded after a stop token.",
            ),
            OutputParam("texts", type_hint=list[str], description="The new text of every prompt, up to its stop."),
            OutputParam(
                "latents",
                type_hint=torch.Tensor,
                description="The clean latents of every generated block, `(batch_size, num_blocks * block_length, "
                "latent_dim)`.",
            ),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, state: PipelineState
    ) -> tuple[ColaDLMModularPipeline, PipelineState]:
        block_state = self.get_block_state(state)
        block_state.sequences, block_state.texts = pad_sequences(
            block_state.truncated, block_state.gen_length, block_state.pad_token_id, components._execution_device
        )
        block_state.latents = block_state.clean_latents
        self.set_block_state(state, block_state)
        return components, state
