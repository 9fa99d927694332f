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
from fastapi.middleware.cors import CORSMiddleware

from ..generation.chat import CHAT_FORMATS
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .engine import GenerationEngine
from .errors import EXCEPTION_HANDLERS
from .middleware import RequestGate, RequestLog
from .openapi import openapi_schema
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
    max_tokens_limit: int | None = None,
    default_max_tokens: int | None = None,
    max_queue: int = 64,
    max_batch_size: int = 16,
    max_rows_per_request: int = 256,
    max_model_len: int | None = None,
    max_request_bytes: int = 2**21,
    body_timeout: float = 30.0,
    chat_format: str | None = None,
    seed: int | None = 0,
    allowed_origins: list[str] | None = None,
    enable_docs: bool = True,
) -> FastAPI:
    """
    Builds the FastAPI app serving `pipe` as `model_name`: `POST /v1/completions`, `POST /v1/chat/completions`,
    `GET /v1/models`, `GET /health` and `GET /metrics`. The pipeline's progress bar is turned off: the app logs a line per request
    instead (logger `cola_diffusers.serving`, level INFO).

    Args:
        pipe ([`ColaDLMPipeline`]): The pipeline; every request runs on its models, in one running batch.
        model_name (`str`): The model id clients pass as `model`.
        api_key (`str`, *optional*): When set, `/v1` requests need `Authorization: Bearer <api_key>`.
        max_tokens_limit (`int`, *optional*): The largest `max_tokens` a request may ask for; default the context
            less one token for the prompt (`max_model_len - 1`).
        default_max_tokens (`int`, *optional*): `max_tokens` of requests that do not set it; default 64, or
            `max_tokens_limit` where that is smaller.
        max_queue (`int`, defaults to 64): Requests waiting or running at most; more are answered 503.
        max_batch_size (`int`, defaults to 16): Rows (prompts times `n`) of the running batch at most; a request of
            more rows joins it a part at a time, in turns with the other requests. Also the most rows of a streamed
            request.
        max_rows_per_request (`int`, defaults to 256): Rows (prompts times `n`) a request may ask for.
        max_model_len (`int`, *optional*): Prompt plus `max_tokens` at most; longer prompts are answered 400
            before they reach the worker. Default the pipeline's `max_sequence_length`.
        max_request_bytes (`int`, defaults to 2 MiB): Larger request bodies are answered 413.
        body_timeout (`float`, defaults to 30): Seconds a request body may take to arrive; slower ones get 408.
        chat_format (`str`, *optional*): How chat messages become a prompt (`"plain"`, `"text"`, `"chatml"`);
            default the checkpoint's.
        seed (`int`, *optional*, defaults to 0): The `seed` of requests that set none, so that they repeat; None
            draws a random one per request.
        allowed_origins (`list[str]`, *optional*): Origins whose browsers may call the API (CORS); `["*"]` for any.
        enable_docs (`bool`, defaults to True): Serve `/docs`, `/redoc` and `/openapi.json` (without a key).
    """
    max_model_len = pipe.max_sequence_length if max_model_len is None else max_model_len
    chat_format = pipe.chat_format if chat_format is None else chat_format
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"`chat_format` must be one of {list(CHAT_FORMATS)}, got {chat_format!r}.")
    max_tokens_limit = max_model_len - 1 if max_tokens_limit is None else max_tokens_limit
    default_max_tokens = min(64, max_tokens_limit) if default_max_tokens is None else default_max_tokens
    pipe.set_progress_bar_config(disable=True)
    docs = {} if enable_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="Cola-DLM", lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS, **docs)
    app.state.engine = GenerationEngine(pipe, max_queue, max_batch_size, max_model_len)
    app.state.config = ServingConfig(
        model_name=model_name,
        max_tokens_limit=max_tokens_limit,
        default_max_tokens=default_max_tokens,
        max_model_len=max_model_len,
        chat_format=chat_format,
        max_rows_per_request=max_rows_per_request,
        max_stream_rows=max_batch_size,
        seed=seed,
    )
    app.add_middleware(
        RequestGate,
        body_paths=frozenset(route.path for route in router.routes if "POST" in route.methods),
        api_key=api_key,
        max_request_bytes=max_request_bytes,
        body_timeout=body_timeout,
    )
    if allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=allowed_origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(RequestLog)
    app.include_router(router)
    app.openapi = lambda: openapi_schema(app, app.state.config, secured=api_key is not None)
    return app
