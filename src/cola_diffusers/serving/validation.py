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

"""Checks a generation request against the served model and turns it into a [`GenerationJob`]."""

import asyncio
import random
from dataclasses import dataclass

from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .engine import GenerationJob, GenerationSettings
from .errors import pipeline_error
from .protocol import ChatCompletionRequest, CompletionRequest, OpenAIError


@dataclass(frozen=True)
class ServingConfig:
    """The served model's id, its chat format and the limits every request is checked against."""

    model_name: str
    max_tokens_limit: int
    default_max_tokens: int
    max_model_len: int
    chat_format: str


def checked_max_tokens(max_tokens: int | None, config: ServingConfig) -> int:
    """The request's `max_tokens` (else the default), refused above the limit or without room for a prompt."""
    max_tokens = config.default_max_tokens if max_tokens is None else max_tokens
    if max_tokens > config.max_tokens_limit:
        message = f"`max_tokens` must be at most {config.max_tokens_limit}, got {max_tokens}."
        raise OpenAIError(400, message, param="max_tokens")
    if max_tokens >= config.max_model_len:
        message = f"`max_tokens` must be below the context of {config.max_model_len} tokens, got {max_tokens}."
        raise OpenAIError(400, message, param="max_tokens", code="context_length_exceeded")
    return max_tokens


async def prompt_lengths(
    pipe: ColaDLMPipeline, inputs: list, chat: bool, max_tokens: int, config: ServingConfig
) -> list[int]:
    """The token count of each prompt, tokenised off the event loop; a prompt that does not fit is a 400."""
    inputs_kwargs = {"messages": inputs, "chat_format": config.chat_format} if chat else {"prompt": inputs}
    prompt_room = config.max_model_len - max_tokens
    try:
        token_ids = await asyncio.to_thread(pipe.tokenize, **inputs_kwargs, max_tokens=prompt_room)
    except ValueError as error:
        error = pipeline_error(error)
        error.body["error"]["param"] = "messages" if chat else "prompt"
        raise error from None
    return [len(ids) for ids in token_ids]


def generation_settings(
    body: CompletionRequest | ChatCompletionRequest,
    max_tokens: int,
    chat: bool,
    config: ServingConfig,
    pipe: ColaDLMPipeline,
) -> GenerationSettings:
    """The settings of a request; steps and guidance it leaves unset are the checkpoint's defaults."""
    num_inference_steps, guidance_scale = pipe.sampling_defaults(body.num_inference_steps, body.guidance_scale)
    return GenerationSettings(
        max_tokens=max_tokens,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        block_length=body.block_length,
        temperature=body.temperature,
        top_k=body.top_k,
        top_p=body.top_p,
        stop=body.stop_strings(),
        chat_format=config.chat_format if chat else None,
        max_sequence_length=config.max_model_len,
    )


async def validated_job(
    body: CompletionRequest | ChatCompletionRequest, config: ServingConfig, pipe: ColaDLMPipeline
) -> tuple[GenerationJob, list[int]]:
    """
    The job a request asks for, `n` rows per prompt with consecutive seeds, and its prompts' token counts. Refused
    requests raise [`OpenAIError`]; prompts that do not fit are refused here, so they never reach the worker.
    """
    if body.model != config.model_name:
        raise OpenAIError(404, f"The model '{body.model}' does not exist.", param="model", code="model_not_found")
    max_tokens = checked_max_tokens(body.requested_max_tokens(), config)
    chat = isinstance(body, ChatCompletionRequest)
    inputs = body.pipeline_inputs()
    lengths = await prompt_lengths(pipe, inputs, chat, max_tokens, config)
    settings = generation_settings(body, max_tokens, chat, config, pipe)
    seed = random.randrange(2**62) if body.seed is None else body.seed
    rows = [item for item in inputs for _ in range(body.n)]
    job = GenerationJob(
        inputs=rows, seeds=[seed + i for i in range(len(rows))], settings=settings, chat=chat, stream=body.stream
    )
    return job, lengths
