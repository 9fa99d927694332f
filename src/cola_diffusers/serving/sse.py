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

"""Server-sent events of a streamed job: one `data:` event per chunk of choices, then `data: [DONE]`."""

import json
from collections.abc import AsyncIterator

from .engine import GenerationEngine, GenerationJob
from .errors import pipeline_error
from .responses import usage


DONE_EVENT = "data: [DONE]\n\n"


def sse_event(payload: dict) -> str:
    """`payload` as one server-sent event."""
    return f"data: {json.dumps(payload)}\n\n"


def stream_choice(
    index: int, chat: bool, text: str | None = None, finish_reason: str | None = None, role: bool = False
) -> dict:
    """A choice of a stream chunk: a text completion's `text`, or a chat completion's `delta`."""
    if not chat:
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
    delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


async def stream_events(
    job: GenerationJob, engine: GenerationEngine, header: dict, prompt_tokens: int, include_usage: bool
) -> AsyncIterator[str]:
    """
    The events of a streamed job: a chunk per block, a chunk per choice with its finish reason, the usage when
    `include_usage`, [DONE]. The job is cancelled once the stream ends, also when the client hangs up.
    """
    chat = job.chat

    def chunk_event(choices: list[dict], **extra) -> str:
        return sse_event({**header, "choices": choices, **extra})

    try:
        if chat:
            yield chunk_event([stream_choice(index, chat, "", role=True) for index in range(job.request.batch_size)])
        while True:
            item = await job.chunks.get()
            if isinstance(item, Exception):
                yield sse_event(pipeline_error(item).body)
                break
            if isinstance(item, list):
                end_text = None if chat else ""
                finals = [stream_choice(index, chat, end_text, c.finish_reason) for index, c in enumerate(item)]
                yield chunk_event(finals)
                if include_usage:
                    yield chunk_event([], usage=usage(prompt_tokens, item))
                break
            choices = [stream_choice(index, chat, text) for index, text in enumerate(item.texts) if text]
            if choices:
                yield chunk_event(choices)
        yield DONE_EVENT
    finally:
        engine.cancel(job)
