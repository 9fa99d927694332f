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

"""The JSON bodies of completion and chat completion responses."""

import time
import uuid

from .engine import Choice


def response_header(model_name: str, chat: bool, stream: bool) -> dict:
    """The fields that open a response, or every chunk of a stream: id, object, created, model."""
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": ("chat.completion" if chat else "text_completion") + (".chunk" if chat and stream else ""),
        "created": int(time.time()),
        "model": model_name,
    }


def usage(prompt_tokens: int, choices: list[Choice]) -> dict:
    """The `usage` of a request whose prompts, `n` times each, total `prompt_tokens`."""
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_choice(index: int, choice: Choice, chat: bool) -> dict:
    if chat:
        return {
            "index": index,
            "message": {"role": "assistant", "content": choice.text},
            "logprobs": None,
            "finish_reason": choice.finish_reason,
        }
    return {"index": index, "text": choice.text, "logprobs": None, "finish_reason": choice.finish_reason}


def completion_body(header: dict, choices: list[Choice], chat: bool, prompt_tokens: int) -> dict:
    """The whole (non-streamed) response."""
    bodies = [completion_choice(index, choice, chat) for index, choice in enumerate(choices)]
    return {**header, "choices": bodies, "usage": usage(prompt_tokens, choices)}
