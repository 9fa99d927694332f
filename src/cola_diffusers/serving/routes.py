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
The endpoints: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`, `GET /health` and
`GET /metrics`.
"""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .engine import Choice, GenerationEngine, GenerationJob
from .errors import pipeline_error
from .openapi import error_responses
from .protocol import ChatCompletionRequest, CompletionRequest, OpenAIError
from .responses import completion_body, response_header
from .sse import stream_events
from .validation import ServingConfig, validated_job


router = APIRouter()


async def get_engine(request: Request) -> GenerationEngine:
    return request.app.state.engine


async def get_config(request: Request) -> ServingConfig:
    return request.app.state.config


EngineDep = Annotated[GenerationEngine, Depends(get_engine)]
ConfigDep = Annotated[ServingConfig, Depends(get_config)]


def submit(engine: GenerationEngine, job: GenerationJob):
    """Queues `job`; a full queue is a 503."""
    try:
        engine.submit(job)
    except asyncio.QueueFull:
        raise OpenAIError(
            503,
            "The server is busy; retry later.",
            type="server_error",
            code="server_overloaded",
            headers={"Retry-After": "1"},
        ) from None


async def wait_for_disconnect(request: Request):
    """Returns when the client of `request`, whose body has been read, hangs up."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def wait_for_completions(job: GenerationJob, request: Request, engine: GenerationEngine) -> list[Choice]:
    """The job's completions; a client that hangs up first cancels the job (at the next block boundary)."""
    hang_up = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        await asyncio.wait({job.result, hang_up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hang_up.cancel()
    if not job.result.done():
        engine.cancel(job)
        raise OpenAIError(499, "The client closed the request.", code="client_closed_request")
    try:
        return job.result.result()
    except Exception as error:
        raise pipeline_error(error) from None


async def generate(
    request: Request, body: CompletionRequest | ChatCompletionRequest, config: ServingConfig, engine: GenerationEngine
) -> dict | StreamingResponse:
    """Runs a completion or chat completion request: its response, or with `stream`, its stream of events."""
    job, prompt_lengths = await validated_job(body, config, engine.pipe)
    submit(engine, job)
    request.state.job = job
    prompt_tokens = sum(prompt_lengths) * body.n
    header = response_header(config.model_name, job.chat, body.stream)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = stream_events(job, engine, header, prompt_tokens, include_usage)
        return StreamingResponse(events, media_type="text/event-stream")
    completions = await wait_for_completions(job, request, engine)
    return completion_body(header, completions, job.chat, prompt_tokens)


GENERATION_RESPONSES = error_responses(400, 401, 404, 408, 413, 500, 503, stream=True)


@router.post("/v1/completions", responses=GENERATION_RESPONSES)
async def completions(request: Request, body: CompletionRequest, config: ConfigDep, engine: EngineDep):
    return await generate(request, body, config, engine)


@router.post("/v1/chat/completions", responses=GENERATION_RESPONSES)
async def chat_completions(request: Request, body: ChatCompletionRequest, config: ConfigDep, engine: EngineDep):
    return await generate(request, body, config, engine)


@router.get("/v1/models", responses=error_responses(401, 500))
async def models(config: ConfigDep):
    return {
        "object": "list",
        "data": [{"id": config.model_name, "object": "model", "created": 0, "owned_by": "cola-diffusers"}],
    }


@router.get("/health", responses=error_responses(500))
async def health(engine: EngineDep):
    return {
        "status": "ok",
        "queued": engine.num_jobs,
        "max_queue": engine.max_queue,
        "running_rows": engine.running_rows,
        "max_batch_size": engine.max_batch_size,
    }


@router.get("/metrics", response_class=Response, responses=error_responses(500))
async def metrics(engine: EngineDep):
    """The server's metrics in Prometheus' text format."""
    return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)
