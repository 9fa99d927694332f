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
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, ConfigSpec, InputParam, OutputParam
from transformers import PreTrainedTokenizerFast

from ...generation.request import REQUEST_ARGUMENTS, GenerationRequest, build_request
from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...pipelines.cola_dlm.layout import GeneratedBlock
from .modular_pipeline import ColaDLMModularPipeline


REQUEST_INPUT = InputParam(
    "request",
    required=True,
    type_hint=GenerationRequest,
    description="The resolved request: prompt token ids and every setting.",
)

BLOCK_INPUTS = [
    InputParam("block", type_hint=GeneratedBlock, description="The current generated block."),
    InputParam("block_latents", type_hint=torch.Tensor, description="The current block's latents."),
]

# The arguments of `ColaDLMPipeline.__call__` that make up a request; every one left None takes the checkpoint's
# value, else that of `DEFAULTS`.
ARGUMENT_INPUTS = [
    InputParam("prompt", type_hint=str | list[str], description="The prompt(s) to continue."),
    InputParam(
        "messages", type_hint=list[dict] | list[list[dict]], description="Chat conversations instead of `prompt`."
    ),
    InputParam("prompt_token_ids", type_hint=list[list[int]], description="Token ids instead of `prompt`."),
    InputParam(
        "chat_format",
        type_hint=str,
        description="How `messages` are rendered: 'plain', 'text' (the official SFT format) or 'chatml'; default "
        "the checkpoint's.",
    ),
    InputParam("gen_length", type_hint=int, description="Number of new tokens per prompt."),
    InputParam("block_length", type_hint=int, description="Latents per generated block."),
    InputParam.template("num_inference_steps", default=None, description="Scheduler steps per block."),
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
        description="Classifier-free guidance scale; ignored when the pipeline has a `guider`.",
    ),
    InputParam("temperature", type_hint=float, description="Sampling temperature; 0 is greedy."),
    InputParam("top_k", type_hint=int, description="Top-k filter when `temperature > 0`."),
    InputParam("top_p", type_hint=float, description="Top-p filter when `temperature > 0`."),
    InputParam("repetition_penalty", type_hint=float, description="Penalty of tokens sampled in earlier blocks."),
    InputParam("presence_penalty", type_hint=float, description="OpenAI's presence penalty of the new tokens."),
    InputParam("frequency_penalty", type_hint=float, description="OpenAI's frequency penalty of the new tokens."),
    InputParam(
        "eos_early_stop",
        type_hint=bool,
        description="Cut each sequence after its first stop token and stop when every prompt has stopped.",
    ),
    InputParam(
        "eos_token_id", type_hint=int | list[int], description="Stop tokens; default `<|endoftext|>` and `<|im_end|>`."
    ),
    InputParam("stop", type_hint=str | list[str], description="Stop strings."),
    InputParam("pad_token_id", type_hint=int, description="Pad token; default the tokenizer's `<|pad|>`."),
    InputParam("max_sequence_length", type_hint=int, description="Prompt plus new tokens at most."),
]


class ColaDLMInputStep(ModularPipelineBlocks):
    model_name = "cola-dlm"

    @property
    def description(self) -> str:
        return (
            "Input step that checks the generation arguments and resolves them, as `ColaDLMPipeline` does, into one "
            "`GenerationRequest`: defaults from the pipeline config and the transformer, the chat format, pad token "
            "and stops, and the prompts' token ids."
        )

    @property
    def expected_configs(self) -> list[ConfigSpec]:
        return [
            ConfigSpec("default_num_inference_steps", None, "The checkpoint's steps per block."),
            ConfigSpec("default_guidance_scale", None, "The checkpoint's guidance scale."),
            ConfigSpec("chat_format", None, "The checkpoint's chat format; None is 'plain'."),
            ConfigSpec("chat_stop_token_id", None, "The token that ends a turn in the checkpoint's chat format."),
            ConfigSpec("chat_pad_with_stop", None, "Whether chat prompts are padded with that token."),
        ]

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [
            ComponentSpec("transformer", ColaTransformer1DModel),
            ComponentSpec("tokenizer", PreTrainedTokenizerFast),
        ]

    @property
    def inputs(self) -> list[InputParam]:
        return ARGUMENT_INPUTS

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [OutputParam("request", type_hint=GenerationRequest, description="The resolved request.")]

    @torch.no_grad()
    def __call__(
        self, components: ColaDLMModularPipeline, state: PipelineState
    ) -> tuple[ColaDLMModularPipeline, PipelineState]:
        block_state = self.get_block_state(state)
        arguments = {name: getattr(block_state, name) for name in REQUEST_ARGUMENTS}
        block_state.request = build_request(components.tokenizer, components.checkpoint_defaults, **arguments)
        self.set_block_state(state, block_state)
        return components, state
