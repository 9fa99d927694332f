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

import inspect

import torch
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, ConfigSpec, InputParam, OutputParam
from transformers import PreTrainedTokenizerFast

from ...generation.chat import CHAT_FORMATS
from ...generation.inputs import (
    DEFAULTS,
    check_length_inputs,
    check_prompt_inputs,
    check_sampling_inputs,
    check_token_sampling_inputs,
)
from ...generation.prompts import max_sequence_length
from ...generation.stopping import chat_stop_token_id, resolve_pad_token_id, resolve_stops
from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...pipelines.cola_dlm.layout import GeneratedBlock
from .modular_pipeline import ColaDLMModularPipeline


GEN_LENGTH_INPUT = InputParam(
    "gen_length", type_hint=int, default=DEFAULTS.gen_length, description="Number of new tokens per prompt."
)

# The scheduler steps of every block.
STEP_INPUTS = [
    InputParam.template(
        "num_inference_steps",
        default=None,
        description="Scheduler steps per block; default the checkpoint's `default_num_inference_steps`, else 16.",
    ),
    InputParam(
        "timesteps",
        type_hint=list[float],
        description="Custom timesteps of every block, for schedulers whose `set_timesteps` accepts them.",
    ),
    InputParam.template(
        "sigmas", description="Custom sigmas of every block, for schedulers whose `set_timesteps` accepts them."
    ),
    InputParam(
        "guidance_scale",
        type_hint=float,
        description="Classifier-free guidance scale; default the checkpoint's `default_guidance_scale`, else 7.0; "
        "ignored when the pipeline has a `guider`.",
    ),
]

# The sampling of every block's tokens.
TOKEN_SAMPLING_INPUTS = [
    InputParam(
        "temperature", type_hint=float, default=DEFAULTS.temperature, description="Sampling temperature; 0 is greedy."
    ),
    InputParam("top_k", type_hint=int, description="Top-k filter when `temperature > 0`."),
    InputParam("top_p", type_hint=float, description="Top-p filter when `temperature > 0`."),
    InputParam(
        "repetition_penalty",
        type_hint=float,
        default=DEFAULTS.repetition_penalty,
        description="Penalty of tokens sampled in earlier blocks.",
    ),
]
# Set by the denoising loop for every block.
BLOCK_INPUTS = [
    InputParam("block", type_hint=GeneratedBlock, description="The current generated block."),
    InputParam("block_latents", type_hint=torch.Tensor, description="The current block's latents."),
]

PROMPT_INPUTS = [
    InputParam("prompt", type_hint=str | list[str], description="The prompt(s) to continue."),
    InputParam(
        "messages",
        type_hint=list[dict] | list[list[dict]],
        description="Chat conversations instead of `prompt`.",
    ),
    InputParam(
        "chat_format",
        type_hint=str,
        description="How `messages` are rendered: 'plain' (default), 'text' (the official SFT format) or 'chatml'.",
    ),
    GEN_LENGTH_INPUT,
    InputParam(
        "max_sequence_length",
        type_hint=int,
        description="Prompt plus new tokens at most; default the tokenizer's `model_max_length`, else 4096.",
    ),
]


class ColaDLMInputStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Input step that checks the generation arguments and resolves their defaults: `block_length` from the "
            "transformer, `num_inference_steps` and `guidance_scale` from the pipeline config, `pad_token_id`, "
            "`max_sequence_length` and the stop tokens from the tokenizer and the chat format."
        )

    @property
    def expected_configs(self) -> list[ConfigSpec]:
        return [
            ConfigSpec("default_num_inference_steps", None, "The checkpoint's steps per block; None keeps 16."),
            ConfigSpec("default_guidance_scale", None, "The checkpoint's guidance scale; None keeps 7.0."),
        ]

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
            *STEP_INPUTS,
            *TOKEN_SAMPLING_INPUTS,
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
            OutputParam("chat_format", type_hint=str, description="The chat format of `messages`, if any."),
            OutputParam("max_sequence_length", type_hint=int, description="Prompt plus new tokens at most."),
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
        block_state.num_inference_steps, block_state.guidance_scale = components.sampling_defaults(
            block_state.num_inference_steps, block_state.guidance_scale
        )
        if block_state.max_sequence_length is None:
            block_state.max_sequence_length = max_sequence_length(components.tokenizer)
        if isinstance(block_state.stop, str):
            block_state.stop = [block_state.stop]
        check_prompt_inputs(block_state.prompt, block_state.messages, block_state.chat_format)
        check_length_inputs(block_state.gen_length, block_state.max_sequence_length)
        check_sampling_inputs(
            **{name: getattr(block_state, name) for name in inspect.signature(check_sampling_inputs).parameters}
        )
        check_token_sampling_inputs(
            block_state.temperature, block_state.top_k, block_state.top_p, block_state.repetition_penalty
        )
        chat, turn_stop_token_id, chat_pad_token_id = None, None, None
        if block_state.messages is not None:
            block_state.chat_format = block_state.chat_format or "plain"
            chat = CHAT_FORMATS[block_state.chat_format]
            turn_stop_token_id = chat_stop_token_id(components.tokenizer, chat)
            chat_pad_token_id = turn_stop_token_id if chat.pad_with_stop else None
        block_state.pad_token_id = resolve_pad_token_id(
            block_state.pad_token_id, chat_pad_token_id, components.pad_token_id
        )
        block_state.stop_token_ids, block_state.stop = resolve_stops(
            components.tokenizer,
            block_state.stop,
            block_state.eos_token_id,
            block_state.eos_early_stop,
            chat,
            turn_stop_token_id,
        )
        self.set_block_state(state, block_state)
        return components, state
