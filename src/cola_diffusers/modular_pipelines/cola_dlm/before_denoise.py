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
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam

from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...pipelines.cola_dlm.layout import ColaDLMLayout
from ...pipelines.cola_dlm.sampler import BlockSampler, prepare_latents, retrieve_timesteps
from ...schedulers.scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler
from .inputs import REQUEST_INPUT
from .modular_pipeline import ColaDLMModularPipeline


class ColaDLMPrepareStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Prepare step that lays out the prompt prefixes (whole blocks of prompt latents) and the generated blocks "
            "in the key/value caches, with the rest of every prompt repainted into the first block; prefills the DiT "
            "and VAE decoder caches with the prefixes, and prepares the noise, the DiT's AdaLN table of the request's "
            "timesteps and the output buffers."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [
            ComponentSpec("transformer", ColaTransformer1DModel),
            ComponentSpec("vae", AutoencoderKLColaText),
            ComponentSpec("scheduler", FlowMatchBlockCausalScheduler),
            ComponentSpec(
                "guider",
                ClassifierFreeGuidance,
                description="Optional; replaces the built-in guidance and `guidance_scale`.",
            ),
        ]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("prompt_latents", required=True, type_hint=torch.Tensor, description="The prompt latents."),
            InputParam(
                "num_prompt_tokens", required=True, type_hint=torch.LongTensor, description="Tokens of every prompt."
            ),
            REQUEST_INPUT,
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
            OutputParam(
                "sampler",
                type_hint=BlockSampler,
                description="The request's generation state: its layout and the prefilled caches of both models.",
            ),
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
        request, device = block_state.request, components._execution_device
        layout = ColaDLMLayout.from_prompts(
            block_state.prompt_latents,
            block_state.num_prompt_tokens,
            request.gen_length,
            request.block_length,
            components.vae.config,
        )
        block_state.latents = prepare_latents(
            components.transformer, layout, block_state.generator, device, block_state.latents
        )
        timesteps = retrieve_timesteps(components.scheduler, request, device)
        block_state.sampler = BlockSampler(
            components.transformer, components.vae, components.scheduler, components.guider, layout, timesteps
        )
        block_state.sampler.prefill(block_state.prompt_latents)
        block_state.clean_latents = torch.zeros_like(block_state.latents)
        block_state.tokens = layout.empty_tokens(request.pad_token_id)
        block_state.layout = layout
        self.set_block_state(state, block_state)
        return components, state
