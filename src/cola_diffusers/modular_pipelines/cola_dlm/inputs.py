import torch
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam
from transformers import PreTrainedTokenizerFast

from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...pipelines.cola_dlm.generation import check_generation_inputs, resolve_stop_token_ids
from .modular_pipeline import ColaDLMModularPipeline


PROMPT_INPUTS = [
    InputParam("prompt", type_hint=str | list[str], description="The prompt(s) to continue."),
    InputParam(
        "messages",
        type_hint=list[dict] | list[list[dict]],
        description="Chat conversations instead of `prompt`, in the release's ChatML convention.",
    ),
    InputParam("gen_length", type_hint=int, default=32, description="Number of new tokens per prompt."),
]


class ColaDLMInputStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Input step that checks the generation arguments and resolves their defaults: `block_length` from the "
            "transformer, `pad_token_id` and the stop tokens from the tokenizer."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [
            ComponentSpec("transformer", ColaTransformer1DModel),
            ComponentSpec("tokenizer", PreTrainedTokenizerFast),
        ]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *PROMPT_INPUTS,
            InputParam(
                "block_length",
                type_hint=int,
                description="Latents per generated block; defaults to the transformer's `block_size`.",
            ),
            InputParam.template("num_inference_steps", default=16, description="Scheduler steps per block."),
            InputParam(
                "guidance_scale",
                type_hint=float,
                default=7.0,
                description="Classifier-free guidance scale; ignored when the pipeline has a `guider`.",
            ),
            InputParam("temperature", type_hint=float, default=0.0, description="Sampling temperature; 0 is greedy."),
            InputParam("top_k", type_hint=int, description="Top-k filter when `temperature > 0`."),
            InputParam("top_p", type_hint=float, description="Top-p filter when `temperature > 0`."),
            InputParam(
                "repetition_penalty",
                type_hint=float,
                default=1.1,
                description="Penalty of tokens sampled in earlier blocks.",
            ),
            InputParam(
                "eos_early_stop",
                type_hint=bool,
                default=True,
                description="Cut each sequence after its first stop token and stop when every prompt has stopped.",
            ),
            InputParam(
                "eos_token_id",
                type_hint=int | list[int],
                description="Stop tokens; default `<|endoftext|>` and `<|im_end|>`.",
            ),
            InputParam("stop", type_hint=str | list[str], description="Stop strings."),
            InputParam("pad_token_id", type_hint=int, description="Pad token; default the tokenizer's `<|pad|>`."),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("block_length", type_hint=int, description="Latents per generated block."),
            OutputParam("pad_token_id", type_hint=int, description="The pad token."),
            OutputParam("stop", type_hint=list[str], description="The stop strings, as a list."),
            OutputParam("stop_token_ids", type_hint=list[int], description="The stop tokens of the request."),
        ]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, state: PipelineState
    ) -> tuple[ColaDLMModularPipeline, PipelineState]:
        block_state = self.get_block_state(state)
        if block_state.block_length is None:
            block_state.block_length = components.default_block_length
        if block_state.pad_token_id is None:
            block_state.pad_token_id = components.pad_token_id
        if isinstance(block_state.stop, str):
            block_state.stop = [block_state.stop]
        check_generation_inputs(
            block_state.prompt,
            block_state.messages,
            block_state.gen_length,
            block_state.block_length,
            block_state.num_inference_steps,
            block_state.guidance_scale,
            block_state.temperature,
            block_state.top_k,
            block_state.top_p,
            block_state.repetition_penalty,
            block_state.pad_token_id,
            block_state.stop,
        )
        block_state.stop_token_ids = resolve_stop_token_ids(
            components.tokenizer, block_state.eos_token_id, block_state.eos_early_stop
        )
        self.set_block_state(state, block_state)
        return components, state
