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

"""Request bodies of the OpenAI-compatible API and its error format."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..generation.inputs import DEFAULTS


class OpenAIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with `status_code`."""

    def __init__(
        self,
        status_code: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}


class GenerationRequest(BaseModel):
    """Fields shared by completions and chat completions; any field not listed here is refused."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=DEFAULTS.temperature, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, lt=2**62)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = None
    # None: the served checkpoint's `default_num_inference_steps` and `default_guidance_scale`, else `DEFAULTS`.
    num_inference_steps: int | None = Field(default=None, ge=1, le=256)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=100.0)
    block_length: int | None = Field(default=None, ge=1, le=256)

    def stop_strings(self) -> tuple[str, ...] | None:
        """`stop` as a tuple of non-empty strings (at most 4), or None."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        if not stop:
            return None
        if len(stop) > 4 or not all(stop):
            message = "`stop` must be a non-empty string or a list of 1 to 4 non-empty strings."
            raise OpenAIError(400, message, param="stop")
        return tuple(stop)

    def requested_max_tokens(self) -> int | None:
        """The `max_tokens` the request asks for; None for the server's default."""
        return self.max_tokens


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] = Field(min_length=1)

    def pipeline_inputs(self) -> list[str]:
        """The prompts, one pipeline input each."""
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def to_pipeline(self) -> dict:
        """The message as the pipeline takes it; text parts are joined by line breaks, as the official adapter does."""
        parts = [self.content] if isinstance(self.content, str) else [part.text for part in self.content if part.text]
        content = "\n".join(parts)
        return {"role": self.role, "content": content}


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def pipeline_inputs(self) -> list[list[dict]]:
        """The conversation as the pipeline's only input."""
        return [[message.to_pipeline() for message in self.messages]]

    def requested_max_tokens(self) -> int | None:
        """`max_completion_tokens`, else `max_tokens`."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
