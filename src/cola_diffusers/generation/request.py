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

"""
One generation request, resolved once: [`build_request`] turns a call's arguments and a checkpoint's
[`CheckpointDefaults`] into a frozen [`GenerationRequest`] that the pipeline, the modular blocks, the server, the
command line, evaluation and training read.
"""

import inspect
from dataclasses import dataclass, replace

from transformers import PreTrainedTokenizerBase

from . import prompts, stopping
from .chat import CHAT_FORMATS, ChatFormat
from .inputs import DEFAULTS, check_length_inputs, check_prompt_inputs, check_sampling_inputs
from .logits import TokenSampling


@dataclass(frozen=True)
class CheckpointDefaults:
    """
    What a checkpoint sets for the requests that leave a setting unset.

    Args:
        block_length (`int`): The DiT's `block_size`.
        max_sequence_length (`int`): Prompt plus new tokens at most (see [`prompts.max_sequence_length`]).
        chat_format (`str`): The recorded chat format, `"plain"` unless the checkpoint records one.
        chat_stop_token_id (`int`, *optional*), chat_pad_with_stop (`bool`, *optional*): What the checkpoint records
            for its own chat format, where it differs from the format's.
        num_inference_steps (`int`), guidance_scale (`float`): The recorded `default_num_inference_steps` and
            `default_guidance_scale`, else those of [`DEFAULTS`].
    """

    block_length: int
    max_sequence_length: int
    chat_format: str = "plain"
    chat_stop_token_id: int | None = None
    chat_pad_with_stop: bool | None = None
    num_inference_steps: int = DEFAULTS.num_inference_steps
    guidance_scale: float = DEFAULTS.guidance_scale

    @classmethod
    def from_pipeline(cls, pipe) -> "CheckpointDefaults":
        """The defaults of a [`ColaDLMPipeline`] or [`ColaDLMModularPipeline`]: its DiT, tokenizer and config."""
        config = pipe.config
        steps, guidance = config.get("default_num_inference_steps"), config.get("default_guidance_scale")
        return cls(
            block_length=pipe.transformer.config.block_size,
            max_sequence_length=prompts.max_sequence_length(pipe.tokenizer),
            chat_format=config.get("chat_format") or "plain",
            chat_stop_token_id=config.get("chat_stop_token_id"),
            chat_pad_with_stop=config.get("chat_pad_with_stop"),
            num_inference_steps=steps or DEFAULTS.num_inference_steps,
            guidance_scale=DEFAULTS.guidance_scale if guidance is None else guidance,
        )

    def steps_and_guidance(
        self, num_inference_steps: int | None = None, guidance_scale: float | None = None
    ) -> tuple[int, float]:
        """The steps per block and guidance scale of a request: those given, else the checkpoint's."""
        if num_inference_steps is None:
            num_inference_steps = self.num_inference_steps
        return num_inference_steps, self.guidance_scale if guidance_scale is None else guidance_scale

    def chat_tokens(self, tokenizer: PreTrainedTokenizerBase, chat_format: str) -> tuple[int | None, bool]:
        """
        The token that ends a turn in `chat_format` (None where it is not one token) and whether it pads chat
        prompts: the format's, or what the checkpoint records for its own format.
        """
        chat, recorded = CHAT_FORMATS[chat_format], chat_format == self.chat_format
        stop_token_id = self.chat_stop_token_id if recorded else None
        if stop_token_id is None:
            stop_token_id = stopping.chat_stop_token_id(tokenizer, chat)
        pad_with_stop = chat.pad_with_stop
        if recorded and self.chat_pad_with_stop is not None:
            pad_with_stop = self.chat_pad_with_stop
        return stop_token_id, pad_with_stop


@dataclass(frozen=True)
class GenerationRequest:
    """
    Everything one generation call runs with, every default resolved (see [`build_request`]).

    Args:
        prompt_token_ids (`tuple[tuple[int, ...], ...]`): The token ids of every prompt.
        gen_length (`int`): New tokens per prompt.
        block_length (`int`): Latents per generated block.
        num_inference_steps (`int`): Scheduler steps per block.
        guidance_scale (`float`): Classifier-free guidance scale; 1 runs one DiT pass per step.
        max_sequence_length (`int`): Prompt plus new tokens at most.
        pad_token_id (`int`): Pad token of the prompts' last block and of the output sequences.
        stop_token_ids (`tuple[int, ...]`): Tokens that end a prompt's text (kept in its tokens).
        stop (`tuple[str, ...]`): Strings that end a prompt's text (cut from it).
        sampling ([`TokenSampling`]): How tokens are drawn from the decoder's logits.
        chat_format (`str`, *optional*): The format the prompts were rendered in, for chat requests.
        timesteps (`tuple[float, ...]`, *optional*), sigmas (`tuple[float, ...]`, *optional*): A custom schedule of
            every block.
    """

    prompt_token_ids: tuple[tuple[int, ...], ...]
    gen_length: int
    block_length: int
    num_inference_steps: int
    guidance_scale: float
    max_sequence_length: int
    pad_token_id: int
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    sampling: TokenSampling = TokenSampling()
    chat_format: str | None = None
    timesteps: tuple[float, ...] | None = None
    sigmas: tuple[float, ...] | None = None

    @property
    def batch_size(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def settings(self) -> "GenerationRequest":
        """This request without its prompts: requests with equal settings can run as one batch."""
        return replace(self, prompt_token_ids=())

    def with_prompts(self, prompt_token_ids) -> "GenerationRequest":
        """These settings for other prompts' token ids."""
        return replace(self, prompt_token_ids=tuple(tuple(ids) for ids in prompt_token_ids))

    def truncate(self, tokenizer: PreTrainedTokenizerBase, new_token_ids: list[int]) -> stopping.Completion:
        """One prompt's new tokens cut at the request's first stop (see [`stopping.truncate`])."""
        return stopping.truncate(tokenizer, new_token_ids, self.stop_token_ids, self.stop)


def tokenize_request(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | list[str] | None,
    messages: list | None,
    chat: ChatFormat | None,
    max_tokens: int | None,
) -> list[list[int]]:
    """The token ids of `prompt`, or of `messages` rendered in `chat`; a prompt over `max_tokens` tokens is refused."""
    if messages is not None:
        return prompts.tokenize(tokenizer, prompts.render_chat(tokenizer, messages, chat), max_tokens, "messages")
    return prompts.tokenize(tokenizer, [prompt] if isinstance(prompt, str) else prompt, max_tokens)


def build_request(
    tokenizer: PreTrainedTokenizerBase,
    checkpoint: CheckpointDefaults,
    *,
    prompt: str | list[str] | None = None,
    messages: list[dict] | list[list[dict]] | None = None,
    prompt_token_ids: list[list[int]] | None = None,
    chat_format: str | None = None,
    gen_length: int | None = None,
    block_length: int | None = None,
    num_inference_steps: int | None = None,
    timesteps: list[float] | None = None,
    sigmas: list[float] | None = None,
    guidance_scale: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    eos_early_stop: bool | None = None,
    eos_token_id: int | list[int] | None = None,
    stop: str | list[str] | None = None,
    pad_token_id: int | None = None,
    max_sequence_length: int | None = None,
) -> GenerationRequest:
    """
    The [`GenerationRequest`] of a call: every argument left None takes the checkpoint's value, else that of
    [`DEFAULTS`]. Exactly one of `prompt`, `messages` (rendered in `chat_format`, default the checkpoint's) and
    `prompt_token_ids` is given. Raises a `ValueError` naming the argument for invalid input, before any model work;
    prompts are tokenized once, here.
    """
    gen_length = DEFAULTS.gen_length if gen_length is None else gen_length
    block_length = checkpoint.block_length if block_length is None else block_length
    num_inference_steps, guidance_scale = checkpoint.steps_and_guidance(num_inference_steps, guidance_scale)
    max_sequence_length = checkpoint.max_sequence_length if max_sequence_length is None else max_sequence_length
    stop = [stop] if isinstance(stop, str) else stop
    check_prompt_inputs(prompt, messages, chat_format, prompt_token_ids)
    check_length_inputs(gen_length, max_sequence_length)
    check_sampling_inputs(
        gen_length=gen_length,
        block_length=block_length,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        stop=stop,
    )
    if timesteps is not None and sigmas is not None:
        raise ValueError("Pass either `timesteps` or `sigmas`, not both.")
    sampling = TokenSampling(
        DEFAULTS.temperature if temperature is None else temperature,
        top_k,
        top_p,
        DEFAULTS.repetition_penalty if repetition_penalty is None else repetition_penalty,
        presence_penalty or 0.0,
        frequency_penalty or 0.0,
    )
    chat, turn_stop_token_id, chat_pad_token_id = None, None, None
    if messages is not None:
        chat_format = chat_format or checkpoint.chat_format
        chat = CHAT_FORMATS[chat_format]
        turn_stop_token_id, pad_with_stop = checkpoint.chat_tokens(tokenizer, chat_format)
        chat_pad_token_id = turn_stop_token_id if pad_with_stop else None
    pad_token_id = stopping.resolve_pad_token_id(pad_token_id, chat_pad_token_id, tokenizer.pad_token_id)
    eos_early_stop = True if eos_early_stop is None else eos_early_stop
    stop_token_ids, stop = stopping.resolve_stops(
        tokenizer, stop, eos_token_id, eos_early_stop, chat, turn_stop_token_id
    )
    max_tokens = max_sequence_length - gen_length
    if prompt_token_ids is None:
        prompt_token_ids = tokenize_request(tokenizer, prompt, messages, chat, max_tokens)
    else:
        prompts.check_token_ids(prompt_token_ids, len(tokenizer), max_tokens)
    return GenerationRequest(
        prompt_token_ids=tuple(tuple(ids) for ids in prompt_token_ids),
        gen_length=gen_length,
        block_length=block_length,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        max_sequence_length=max_sequence_length,
        pad_token_id=pad_token_id,
        stop_token_ids=tuple(stop_token_ids),
        stop=tuple(stop or ()),
        sampling=sampling,
        chat_format=chat_format if messages is not None else None,
        timesteps=None if timesteps is None else tuple(float(value) for value in timesteps),
        sigmas=None if sigmas is None else tuple(float(value) for value in sigmas),
    )


# The arguments of a request, as `build_request` names them.
REQUEST_ARGUMENTS = frozenset(inspect.signature(build_request).parameters) - {"tokenizer", "checkpoint"}
