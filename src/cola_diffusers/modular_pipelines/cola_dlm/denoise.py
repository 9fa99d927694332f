import torch
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.modular_pipelines import (
    BlockState,
    LoopSequentialPipelineBlocks,
    ModularPipelineBlocks,
    PipelineState,
)
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam

from ...models.attention_cola import ColaKVCache
from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...pipelines.cola_dlm.generation import (
    ColaDLMBlock,
    ColaDLMLayout,
    commit_block,
    denoise_step,
    retrieve_timesteps,
    step_modulations,
)
from ...schedulers.scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler
from .decoders import ColaDLMBlockDecodeStep
from .modular_pipeline import ColaDLMModularPipeline


class ColaDLMBlockDenoiseStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Denoise step inside the block loop: integrates the current block from noise to clean latents with the "
            "scheduler. Every step is guided by the built-in classifier-free guidance (the block with its cached "
            "context against the block alone) or by the `guider` when the pipeline has one; the repainted prompt "
            "latents stay pinned."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [
            ComponentSpec("transformer", ColaTransformer1DModel),
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
            InputParam("layout", required=True, type_hint=ColaDLMLayout, description="The cache layout."),
            InputParam("transformer_cache", required=True, type_hint=ColaKVCache, description="The DiT's cache."),
            InputParam("latents", required=True, type_hint=torch.Tensor, description="The noise of every block."),
            InputParam.template("num_inference_steps", default=16, description="Scheduler steps per block."),
            InputParam(
                "timesteps",
                type_hint=list[float],
                description="Custom timesteps of every block, for schedulers whose `set_timesteps` accepts them.",
            ),
            InputParam.template(
                "sigmas",
                description="Custom sigmas of every block, for schedulers whose `set_timesteps` accepts them.",
            ),
            InputParam(
                "guidance_scale",
                type_hint=float,
                default=7.0,
                description="Classifier-free guidance scale; ignored when the pipeline has a `guider`.",
            ),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("block", type_hint=ColaDLMBlock, description="The current block."),
            OutputParam("block_latents", type_hint=torch.Tensor, description="The current block's clean latents."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, block_state: BlockState, block_index: int
    ) -> tuple[ColaDLMModularPipeline, BlockState]:
        block = block_state.layout.block(block_index, block_state.guidance_scale)
        block_latents = block.repaint(block_state.latents[:, block.latent_slice])
        block_timesteps = retrieve_timesteps(
            components.scheduler,
            block_state.num_inference_steps,
            components._execution_device,
            block_state.timesteps,
            block_state.sigmas,
        )
        modulations = step_modulations(components.transformer, block, block_timesteps)
        for step_index, (t, modulation) in enumerate(zip(block_timesteps, modulations)):
            block_latents, _ = denoise_step(
                components.transformer,
                components.scheduler,
                components.guider,
                block,
                block_latents,
                t,
                step_index,
                len(block_timesteps),
                block_state.transformer_cache,
                modulation,
            )
        block_state.block = block
        block_state.block_latents = block_latents
        return components, block_state


class ColaDLMBlockCommitStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Commit step inside the block loop: writes the clean block into the DiT cache for the blocks that follow, "
            "unless it is the last block or every prompt has stopped."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer", ColaTransformer1DModel)]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("block", required=True, type_hint=ColaDLMBlock, description="The current block."),
            InputParam("block_latents", required=True, type_hint=torch.Tensor, description="Its clean latents."),
            InputParam("layout", required=True, type_hint=ColaDLMLayout, description="The cache layout."),
            InputParam("transformer_cache", required=True, type_hint=ColaKVCache, description="The DiT's cache."),
            InputParam("finished", required=True, type_hint=bool, description="Whether every prompt has stopped."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, block_state: BlockState, block_index: int
    ) -> tuple[ColaDLMModularPipeline, BlockState]:
        if not block_state.finished and block_index + 1 < block_state.layout.num_blocks:
            commit_block(
                components.transformer, block_state.block, block_state.block_latents, block_state.transformer_cache
            )
        return components, block_state


class ColaDLMBlockLoop(LoopSequentialPipelineBlocks):
    model_name = "cola-dlm"
    block_classes = [ColaDLMBlockDenoiseStep, ColaDLMBlockDecodeStep, ColaDLMBlockCommitStep]
    block_names = ["denoise", "decode", "commit"]

    @property
    def description(self) -> str:
        return (
            "Block loop that generates the blocks one after the other, running denoise -> decode -> commit for every "
            "block, until the last block or until every prompt has stopped."
        )

    @property
    def loop_inputs(self) -> list[InputParam]:
        return [InputParam("layout", required=True, type_hint=ColaDLMLayout, description="The cache layout.")]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, state: PipelineState
    ) -> tuple[ColaDLMModularPipeline, PipelineState]:
        block_state = self.get_block_state(state)
        num_blocks = block_state.layout.num_blocks
        with self.progress_bar(total=num_blocks) as progress_bar:
            for block_index in range(num_blocks):
                components, block_state = self.loop_step(components, block_state, block_index=block_index)
                progress_bar.update()
                if block_state.finished:
                    break
        self.set_block_state(state, block_state)
        return components, state
