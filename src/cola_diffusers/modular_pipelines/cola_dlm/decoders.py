# Copyright 2026 The cola-diffusers Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

import torch
from diffusers.modular_pipelines import BlockState, ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam
from transformers import PreTrainedTokenizerFast

from ...generation.stopping import Completion, finish_reasons, pad_sequences
from ...pipelines.cola_dlm.sampler import BlockSampler
from .inputs import BLOCK_INPUTS, REQUEST_INPUT
from .modular_pipeline import ColaDLMModularPipeline


class ColaDLMLoopDecoder(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Step inside the denoising loop that, after a block's last step, decodes the clean block with the VAE "
            "decoder (appending it to the decoder cache), samples its tokens and cuts the new tokens of every prompt "
            "at its first stop."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("tokenizer", PreTrainedTokenizerFast)]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam(
                "sampler", required=True, type_hint=BlockSampler, description="The request's layout and caches."
            ),
            *BLOCK_INPUTS,
            InputParam("clean_latents", required=True, type_hint=torch.Tensor, description="Clean latents buffer."),
            InputParam("tokens", required=True, type_hint=torch.LongTensor, description="Sampled tokens buffer."),
            REQUEST_INPUT,
            InputParam.template("generator"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam(
                "completions",
                type_hint=list[Completion],
                description="Per prompt, its new tokens and text so far, cut at the first stop.",
            ),
            OutputParam("finished", type_hint=bool, description="Whether every prompt has stopped."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, block_state: BlockState, step_index: int, t: torch.Tensor
    ) -> tuple[ColaDLMModularPipeline, BlockState]:
        if step_index + 1 < block_state.num_steps:
            return components, block_state
        block, tokens, request = block_state.block, block_state.tokens, block_state.request
        block_state.clean_latents[:, block.latent_slice] = block_state.block_latents
        logits = block_state.sampler.decode_block(block, block_state.block_latents)
        history, num_prompt_tokens = (
            tokens[:, : block.token_slice.start],
            block_state.sampler.layout.num_trimmed_tokens,
        )
        tokens[:, block.token_slice] = request.sampling(logits, history, block_state.generator, num_prompt_tokens)
        new_token_ids = block_state.sampler.layout.new_token_ids(tokens, block.token_slice.stop, request.gen_length)
        block_state.completions = [request.truncate(components.tokenizer, ids) for ids in new_token_ids]
        block_state.finished = all(completion.stopped for completion in block_state.completions)
        return components, block_state


class ColaDLMOutputStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Output step that pads the new tokens of every prompt to `gen_length` and returns them with their texts, "
            "why each ended and the clean latents of the generated blocks."
        )

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam(
                "completions",
                required=True,
                type_hint=list[Completion],
                description="Per prompt, its new tokens and text, cut at the first stop.",
            ),
            InputParam("clean_latents", required=True, type_hint=torch.Tensor, description="The clean latents."),
            REQUEST_INPUT,
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
            OutputParam(
                "finish_reasons", type_hint=list[str], description="Why every prompt ended: 'stop' or 'length'."
            ),
            OutputParam("num_tokens", type_hint=list[int], description="The new tokens every prompt kept."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, state: PipelineState
    ) -> tuple[ColaDLMModularPipeline, PipelineState]:
        block_state = self.get_block_state(state)
        completions, request = block_state.completions, block_state.request
        block_state.sequences = pad_sequences(
            completions, request.gen_length, request.pad_token_id, components._execution_device
        )
        block_state.texts = [completion.text for completion in completions]
        block_state.latents = block_state.clean_latents
        block_state.finish_reasons = finish_reasons(completions)
        block_state.num_tokens = [len(completion.token_ids) for completion in completions]
        self.set_block_state(state, block_state)
        return components, state
