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

"""The defaults of a generation request and the checks of its arguments, before any model work."""

from dataclasses import dataclass

from .chat import CHAT_FORMATS


@dataclass(frozen=True)
class GenerationDefaults:
    """
    The defaults of [`ColaDLMPipeline.__call__`], also used by the modular blocks, the command line and server; a
    checkpoint's `default_num_inference_steps` and `default_guidance_scale` replace the step count and guidance.
    """

    gen_length: int = 32
    num_inference_steps: int = 16
    guidance_scale: float = 7.0
    temperature: float = 0.0
    repetition_penalty: float = 1.1


DEFAULTS = GenerationDefaults()

# The largest seed a request or a server may set: whole numbers up to 2**53 are exact in every JSON parser.
MAX_SEED = 2**53 - 1


@dataclass(frozen=True)
class GenerationLimits:
    """The largest sizes the command line accepts, as the server does: beyond them a call only exhausts memory."""

    block_length: int = 256
    num_inference_steps: int = 256
    max_sequence_length: int = 65536


LIMITS = GenerationLimits()


def check_checkpoint_defaults(default_num_inference_steps, default_guidance_scale):
    """Raises a `ValueError` for a checkpoint's default step count or guidance scale that a call would refuse."""
    steps = default_num_inference_steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"`default_num_inference_steps` must be an integer >= 1 or None, got {steps!r}.")
    guidance = default_guidance_scale
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or guidance < 0):
        raise ValueError(f"`default_guidance_scale` must be a number >= 0 or None, got {guidance!r}.")


class PromptTooLongError(ValueError):
    """A prompt that does not fit in the maximum sequence length with the requested new tokens."""


def check_prompt_inputs(prompt, messages, chat_format=None, prompt_token_ids=None):
    """Raises a `ValueError` unless exactly one of `prompt`, `messages` and `prompt_token_ids` is given, well formed."""
    if sum(value is not None for value in (prompt, messages, prompt_token_ids)) != 1:
        raise ValueError("Pass exactly one of `prompt`, `messages` and `prompt_token_ids`.")
    if prompt is not None:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or len(prompts) == 0:
            raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
        for index, text in enumerate(prompts):
            if not isinstance(text, str):
                raise ValueError(f"`prompt[{index}]` must be a string, got {type(text).__name__}.")
            if not text:
                raise ValueError(f"`prompt[{index}]` is empty; every prompt needs at least one token.")
    if messages is not None and not (
        isinstance(messages, list) and messages and all(isinstance(m, (dict, list)) for m in messages)
    ):
        raise ValueError("`messages` must be a non-empty list of {'role', 'content'} dicts, or a list of such lists.")
    if chat_format is not None and messages is None:
        raise ValueError("`chat_format` applies to `messages`; pass `messages` or leave `chat_format` unset.")
    if chat_format is not None and chat_format not in CHAT_FORMATS:
        raise ValueError(f"`chat_format` must be one of {list(CHAT_FORMATS)}, got {chat_format!r}.")


def check_sampling_inputs(*, gen_length, block_length, num_inference_steps, guidance_scale, stop):
    """Raises a `ValueError` for an invalid length, step count, guidance or stop argument."""
    for name, value in (
        ("gen_length", gen_length),
        ("block_length", block_length),
        ("num_inference_steps", num_inference_steps),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    if guidance_scale < 0:
        raise ValueError(f"`guidance_scale` must be >= 0, got {guidance_scale}.")
    if stop is not None and not all(isinstance(text, str) and text for text in stop):
        raise ValueError(f"`stop` must be a non-empty string or a list of non-empty strings, got {stop!r}.")


def check_token_sampling_inputs(temperature, top_k, top_p, repetition_penalty, presence_penalty, frequency_penalty):
    """Raises a `ValueError` for an invalid token sampling argument."""
    if temperature < 0:
        raise ValueError(f"`temperature` must be >= 0, got {temperature}.")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be an integer >= 1 or None, got {top_k!r}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"`top_p` must be in (0, 1] or None, got {top_p}.")
    if repetition_penalty <= 0:
        raise ValueError(f"`repetition_penalty` must be > 0, got {repetition_penalty}.")
    for name, value in (("presence_penalty", presence_penalty), ("frequency_penalty", frequency_penalty)):
        if not -2 <= value <= 2:
            raise ValueError(f"`{name}` must be in [-2, 2], got {value}.")


def check_length_inputs(gen_length, max_sequence_length):
    """Raises a `ValueError` for an invalid `max_sequence_length`, or one that leaves no room for a prompt."""
    if max_sequence_length is None:
        return
    if not isinstance(max_sequence_length, int) or max_sequence_length < 2:
        raise ValueError(f"`max_sequence_length` must be an integer >= 2, got {max_sequence_length!r}.")
    if isinstance(gen_length, int) and gen_length >= max_sequence_length:
        raise PromptTooLongError(
            f"`gen_length` ({gen_length}) leaves no room for a prompt in `max_sequence_length` ({max_sequence_length})."
        )
