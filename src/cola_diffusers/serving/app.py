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

"""An OpenAI-compatible HTTP server for [`ColaDLMPipeline`]: completions, chat completions, streaming, batching."""

import asyncio
import contextlib

from fastapi import FastAPI

from ..generation.chat import CHAT_FORMATS
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .engine import GenerationEngine
from .errors import EXCEPTION_HANDLERS
from .middleware import RequestGate
from .routes import router
from .validation import ServingConfig


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    """Runs the engine's worker while the app is up."""
    worker = asyncio.create_task(app.state.engine.run())
    yield
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker


def create_app(
    pipe: ColaDLMPipeline,
    model_name: str,
    *,
    api_key: str | None = None,
    max_tokens_limit: int = 512,
    default_max_tokens: int = 64,
    max_queue: int = 64,
    max_batch_size: int = 16,
    max_model_len: int | None = None,
    max_request_bytes: int = 2**21,
    chat_format: str | None = None,
) -> FastAPI:
    """
    Builds the FastAPI app serving `pipe` as `model_name`: `POST /v1/completions`, `POST /v1/chat/completions`,
    `GET /v1/models` and `GET /health`.

    Args:
        pipe ([`ColaDLMPipeline`]): The pipeline; every request runs on it, one pipeline call at a time.
        model_name (`str`): The model id clients pass as `model`.
        api_key (`str`, *optional*): When set, `/v1` requests need `Authorization: Bearer <api_key>`.
        max_tokens_limit (`int`, defaults to 512): The largest `max_tokens` a request may ask for.
        default_max_tokens (`int`, defaults to 64): `max_tokens` of requests that do not set it.
        max_queue (`int`, defaults to 64): Requests waiting or running at most; more are answered 503.
        max_batch_size (`int`, defaults to 16): Prompts per pipeline call at most.
        max_model_len (`int`, *optional*): Prompt plus `max_tokens` at most; longer prompts are answered 400
            before they reach the worker. Default the pipeline's `max_sequence_length`.
        max_request_bytes (`int`, defaults to 2 MiB): Larger request bodies are answered 413.
        chat_format (`str`, *optional*): How chat messages become a prompt (`"plain"`, `"text"`, `"chatml"`);
            default the checkpoint's.
    """
    max_model_len = pipe.max_sequence_length if max_model_len is None else max_model_len
    chat_format = pipe.chat_format if chat_format is None else chat_format
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"`chat_format` must be one of {list(CHAT_FORMATS)}, got {chat_format!r}.")
    engine = GenerationEngine(pipe, max_queue=max_queue, max_batch_size=max_batch_size)
    app = FastAPI(title="Cola-DLM", lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.state.engine = engine
    app.state.config = ServingConfig(model_name, max_tokens_limit, default_max_tokens, max_model_len, chat_format)
    app.add_middleware(RequestGate, api_key=api_key, max_request_bytes=max_request_bytes)
    app.include_router(router)
    return app
