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
import re
from dataclasses import dataclass

from ..generation.inputs import MAX_SEED
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .engine import GenerationJob
from .errors import pipeline_error, quoted
from .protocol import ChatCompletionRequest, CompletionRequest, OpenAIError


@dataclass(frozen=True)
class ServingConfig:
    """
    The served model's id, its chat format, the limits every request is checked against, and the seed of the
    requests that set none (None: a random one per request).
    """

    model_name: str
    max_tokens_limit: int
    default_max_tokens: int
    max_model_len: int
    chat_format: str
    max_rows_per_request: int
    max_stream_rows: int
    seed: int | None


def check_rows(body: CompletionRequest | ChatCompletionRequest, num_prompts: int, config: ServingConfig):
    """Refuses a request of more rows (prompts times `n`) than a request, or a streamed one, may have."""
    rows = num_prompts * body.n
    if rows > config.max_rows_per_request:
        message = (
            f"A request may ask for at most {config.max_rows_per_request} completions (prompts times `n`), "
            f"got {num_prompts} x {body.n} = {rows}."
        )
        raise OpenAIError(400, message, param="n" if num_prompts == 1 else "prompt")
    if body.stream and rows > config.max_stream_rows:
        message = (
            f"A streamed request may ask for at most {config.max_stream_rows} completions (prompts times `n`), "
            f"got {rows}; send it without `stream` or split it."
        )
        raise OpenAIError(400, message, param="n" if num_prompts == 1 else "prompt")


def checked_max_tokens(max_tokens: int | None, config: ServingConfig) -> int:
    """The request's `max_tokens` (else the default), refused above the limit or without room for a prompt."""
    max_tokens = config.default_max_tokens if max_tokens is None else max_tokens
    if max_tokens >= config.max_model_len:
        message = f"`max_tokens` must be below the context of {config.max_model_len} tokens, got {max_tokens}."
        raise OpenAIError(400, message, param="max_tokens", code="context_length_exceeded")
    if max_tokens > config.max_tokens_limit:
        message = f"`max_tokens` must be at most {config.max_tokens_limit} (the server's limit), got {max_tokens}."
        raise OpenAIError(400, message, param="max_tokens")
    return max_tokens


# The request settings the server checks and the names its clients know them by.
PARAMS = {"gen_length": "max_tokens", "block_length": "block_length", "stop": "stop"}
PARAMS.update({name: name for name in ("num_inference_steps", "guidance_scale", "temperature", "top_k", "top_p")})


def refused(error: ValueError, chat: bool) -> OpenAIError:
    """A request the pipeline refuses, as a 400 naming the parameter: a setting's, else the prompts'."""
    openai_error = pipeline_error(error)
    name = re.match(r"`(\w+)", str(error))
    param = PARAMS.get(name.group(1)) if name else None
    openai_error.body["error"]["param"] = param or ("messages" if chat else "prompt")
    return openai_error


async def validated_job(
    body: CompletionRequest | ChatCompletionRequest, config: ServingConfig, pipe: ColaDLMPipeline
) -> tuple[GenerationJob, list[int]]:
    """
    The job a request asks for, `n` rows per prompt with consecutive seeds, and its prompts' token counts. The
    request is resolved and its prompts tokenized once, off the event loop; refused requests raise
    [`OpenAIError`], so they never reach the worker.
    """
    if body.model != config.model_name:
        message = f"The model {quoted(body.model)} does not exist; this server serves '{config.model_name}'."
        raise OpenAIError(404, message, param="model", code="model_not_found")
    if body.max_tokens is not None:
        checked_max_tokens(body.max_tokens, config)
    max_tokens = checked_max_tokens(body.requested_max_tokens(), config)
    chat = isinstance(body, ChatCompletionRequest)
    inputs = body.pipeline_inputs()
    check_rows(body, len(inputs), config)
    prompts = {"messages": inputs, "chat_format": config.chat_format} if chat else {"prompt": inputs}
    try:
        request = await asyncio.to_thread(
            pipe.make_request,
            **prompts,
            gen_length=max_tokens,
            num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale,
            block_length=body.block_length,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            repetition_penalty=body.repetition_penalty,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            stop=body.stop_strings(),
            max_sequence_length=config.max_model_len,
        )
    except ValueError as error:
        raise refused(error, chat) from None
    seed = body.seed if body.seed is not None else config.seed
    seed = random.randrange(MAX_SEED + 1) if seed is None else seed
    rows = [ids for ids in request.prompt_token_ids for _ in range(body.n)]
    job = GenerationJob(
        request=request.with_prompts(rows),
        seeds=[seed + row for row in range(len(rows))],
        chat=chat,
        stream=body.stream,
    )
    return job, [len(ids) for ids in request.prompt_token_ids]
