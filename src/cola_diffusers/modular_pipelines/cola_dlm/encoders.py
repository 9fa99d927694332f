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
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam

from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...pipelines.cola_dlm.sampler import encode_prompt
from .inputs import REQUEST_INPUT
from .modular_pipeline import ColaDLMModularPipeline


class ColaDLMTextEncoderStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Text encoder step that encodes the request's prompt token ids with the Text VAE into normalised latents, "
            "every prompt right-padded with the request's pad token to whole blocks."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("vae", AutoencoderKLColaText)]

    @property
    def inputs(self) -> list[InputParam]:
        return [REQUEST_INPUT]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam(
                "prompt_latents",
                type_hint=torch.Tensor,
                description="Normalised prompt latents, `(batch_size, max_latents, latent_dim)`, right-padded.",
            ),
            OutputParam(
                "num_prompt_tokens", type_hint=torch.LongTensor, description="Number of tokens of every prompt."
            ),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, state: PipelineState
    ) -> tuple[ColaDLMModularPipeline, PipelineState]:
        block_state = self.get_block_state(state)
        request = block_state.request
        block_state.prompt_latents, block_state.num_prompt_tokens = encode_prompt(
            components.vae,
            request.prompt_token_ids,
            request.block_length,
            request.pad_token_id,
            components._execution_device,
        )
        self.set_block_state(state, block_state)
        return components, state
