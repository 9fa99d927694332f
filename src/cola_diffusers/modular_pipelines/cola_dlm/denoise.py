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
from diffusers.modular_pipelines import (
    BlockState,
    LoopSequentialPipelineBlocks,
    ModularPipelineBlocks,
    PipelineState,
)
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam

from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...pipelines.cola_dlm.layout import GeneratedBlock
from ...pipelines.cola_dlm.sampler import BlockSampler, Commit, retrieve_timesteps
from ...schedulers.scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler
from .decoders import ColaDLMLoopDecoder
from .inputs import BLOCK_INPUTS, REQUEST_INPUT
from .modular_pipeline import ColaDLMModularPipeline


SAMPLER_INPUT = InputParam(
    "sampler", required=True, type_hint=BlockSampler, description="The request's layout and caches."
)
COMMIT_INPUT = InputParam(
    "commit", type_hint=Commit, description="The previous block, which the next DiT pass writes into the cache."
)


class ColaDLMLoopDenoiser(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Step inside the denoising loop that predicts the guided velocity of the current block: the built-in "
            "classifier-free guidance (the block with its cached context against the block alone), or the `guider` "
            "when the pipeline has one. Its DiT pass also writes the previous block (`commit`) into the cache."
        )

    @property
    def inputs(self) -> list[InputParam]:
        return [SAMPLER_INPUT, *BLOCK_INPUTS, COMMIT_INPUT]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("velocity", type_hint=torch.Tensor, description="The guided velocity of this step."),
            OutputParam("commit", type_hint=Commit, description="None once the previous block is in the cache."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, block_state: BlockState, step_index: int, t: torch.Tensor
    ) -> tuple[ColaDLMModularPipeline, BlockState]:
        block_state.velocity = block_state.sampler.guided_velocity(
            block_state.block,
            block_state.block_latents,
            t,
            step_index,
            block_state.num_steps,
            commit=block_state.commit,
        )
        block_state.commit = None
        return components, block_state


class ColaDLMLoopAfterDenoiser(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Step inside the denoising loop that updates the block's latents with the scheduler, the repainted "
            "prompt latents kept."
        )

    @property
    def inputs(self) -> list[InputParam]:
        return [SAMPLER_INPUT, *BLOCK_INPUTS]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, block_state: BlockState, step_index: int, t: torch.Tensor
    ) -> tuple[ColaDLMModularPipeline, BlockState]:
        block_state.block_latents = block_state.sampler.step(
            block_state.block, block_state.velocity, t, block_state.block_latents
        )
        return components, block_state


class ColaDLMLoopCommit(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Step inside the denoising loop that, after a block's last step, hands the clean block to the next DiT "
            "pass as `commit`, to be written into the cache for the blocks that follow, unless it is the last block "
            "or every prompt has stopped."
        )

    @property
    def inputs(self) -> list[InputParam]:
        return [
            SAMPLER_INPUT,
            *BLOCK_INPUTS,
            InputParam("finished", required=True, type_hint=bool, description="Whether every prompt has stopped."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, block_state: BlockState, step_index: int, t: torch.Tensor
    ) -> tuple[ColaDLMModularPipeline, BlockState]:
        sampler, block = block_state.sampler, block_state.block
        last_step = step_index + 1 == block_state.num_steps
        if last_step and not block_state.finished and block.index + 1 < sampler.layout.num_blocks:
            block_state.commit = (block, block_state.block_latents)
        return components, block_state


class ColaDLMDenoiseLoopWrapper(LoopSequentialPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Denoising loop that generates the blocks one after the other: it integrates every block from its noise "
            "to clean latents, running its sub-blocks at every timestep of the block's schedule, until the last "
            "block or until every prompt has stopped."
        )

    @property
    def loop_expected_components(self) -> list[ComponentSpec]:
        return [
            ComponentSpec("transformer", ColaTransformer1DModel),
            ComponentSpec("scheduler", FlowMatchBlockCausalScheduler),
        ]

    @property
    def loop_inputs(self) -> list[InputParam]:
        return [
            SAMPLER_INPUT,
            InputParam("latents", required=True, type_hint=torch.Tensor, description="The noise of every block."),
            REQUEST_INPUT,
        ]

    @property
    def loop_intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("block", type_hint=GeneratedBlock, description="The current generated block."),
            OutputParam("block_latents", type_hint=torch.Tensor, description="The current block's clean latents."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, state: PipelineState
    ) -> tuple[ColaDLMModularPipeline, PipelineState]:
        block_state = self.get_block_state(state)
        layout, request = block_state.sampler.layout, block_state.request
        block_state.finished, block_state.commit = False, None
        with self.progress_bar(total=layout.num_blocks) as progress_bar:
            for block_index in range(layout.num_blocks):
                block = block_state.block = layout.block(block_index, request.guidance_scale)
                block_state.block_latents = block.repaint(block_state.latents[:, block.latent_slice])
                # Every block runs the whole schedule: the scheduler starts afresh.
                timesteps = retrieve_timesteps(components.scheduler, request, components._execution_device)
                block_state.num_steps = len(timesteps)
                for step_index, t in enumerate(timesteps):
                    components, block_state = self.loop_step(components, block_state, step_index=step_index, t=t)
                progress_bar.update()
                if block_state.finished:
                    break
        self.set_block_state(state, block_state)
        return components, state


class ColaDLMDenoiseStep(ColaDLMDenoiseLoopWrapper):
    block_classes = [ColaDLMLoopDenoiser, ColaDLMLoopAfterDenoiser, ColaDLMLoopDecoder, ColaDLMLoopCommit]
    block_names = ["denoiser", "after_denoiser", "decoder", "commit"]

    @property
    def description(self) -> str:
        return (
            "Denoise step that generates every block: denoiser -> after_denoiser at every step, then, after the "
            "block's last step, decoder (tokens and stops) -> commit (the block into the DiT cache)."
        )
