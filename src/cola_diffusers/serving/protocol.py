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

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ..generation.inputs import DEFAULTS, LIMITS, MAX_SEED


class OpenAIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with `status_code`."""

    def __init__(
        self,
        status_code: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.headers = headers


def unicode_text(text: str) -> str:
    """Refuses text that is not Unicode: JSON can spell lone surrogates (`"\\ud800"`), which no encoder takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"the text holds a lone surrogate at character {error.start}") from None
    return text


Text = Annotated[str, AfterValidator(unicode_text)]
NonEmptyText = Annotated[Text, Field(min_length=1)]


def whole_number(value):
    """A float without a fraction (`2.0`) as the integer it is, which JSON Schema counts as one; else `value`."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(**bounds):
    """A strict integer field within `bounds` (`ge`, `le`) that also takes whole floats."""
    return Annotated[int, Field(**bounds), BeforeValidator(whole_number)]


class StrictModel(BaseModel):
    """A request body part: no field beyond those listed, and no value of another JSON type (`"2"` is no number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(StrictModel):
    include_usage: bool = False


class GenerationRequest(StrictModel):
    """Fields shared by completions and chat completions; any field not listed here is refused."""

    model: Text
    max_tokens: integer(ge=1) | None = None
    temperature: float = Field(default=DEFAULTS.temperature, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: integer(ge=1) | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # vLLM's extension; None: `DEFAULTS.repetition_penalty`, the official sampler's.
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    seed: integer(ge=0, le=MAX_SEED) | None = None
    stop: NonEmptyText | Annotated[list[NonEmptyText], Field(max_length=4)] | None = None
    n: integer(ge=1, le=16) = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None
    # None: the served checkpoint's `default_num_inference_steps` and `default_guidance_scale`, else `DEFAULTS`.
    num_inference_steps: integer(ge=1, le=LIMITS.num_inference_steps) | None = None
    guidance_scale: float | None = Field(default=None, ge=0.0, le=100.0)
    block_length: integer(ge=1, le=LIMITS.block_length) | None = None

    def stop_strings(self) -> tuple[str, ...] | None:
        """`stop` as a tuple of strings (at most 4, none empty), or None."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(stop) if stop else None

    def requested_max_tokens(self) -> int | None:
        """The `max_tokens` the request asks for; None for the server's default."""
        return self.max_tokens


class CompletionRequest(GenerationRequest):
    prompt: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]

    def pipeline_inputs(self) -> list[str]:
        """The prompts, one pipeline input each."""
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class TextPart(StrictModel):
    type: Literal["text"]
    text: NonEmptyText


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: NonEmptyText | Annotated[list[TextPart], Field(min_length=1)]

    def to_pipeline(self) -> dict:
        """The message as the pipeline takes it; text parts are joined by line breaks, as the official adapter does."""
        parts = [self.content] if isinstance(self.content, str) else [part.text for part in self.content if part.text]
        content = "\n".join(parts)
        return {"role": self.role, "content": content}


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: integer(ge=1) | None = None

    def pipeline_inputs(self) -> list[list[dict]]:
        """The conversation as the pipeline's only input."""
        return [[message.to_pipeline() for message in self.messages]]

    def requested_max_tokens(self) -> int | None:
        """`max_completion_tokens`, else `max_tokens`."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
