"""An OpenAI-compatible HTTP server for [`ColaDLMPipeline`]: completions, chat completions, streaming, batching."""

import asyncio
import contextlib
import hmac
import json
import random
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..pipelines.cola_dlm.generation import IM_START_TOKEN
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .engine import Completion, GenerationEngine, GenerationJob, GenerationSettings
from .protocol import ChatCompletionRequest, CompletionRequest, GenerationRequest, OpenAIError


def error_response(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status_code)


def validation_error(exc: RequestValidationError) -> OpenAIError:
    """The first validation problem of a request body as a 400 error."""
    problem = exc.errors()[0]
    param = ".".join(str(part) for part in problem["loc"][1:]) or None
    if problem["type"] == "json_invalid":
        return OpenAIError(400, "The request body is not valid JSON.", code="invalid_json")
    if param is None:
        message = "The request body must be a JSON object sent with `Content-Type: application/json`."
        return OpenAIError(400, message, code="invalid_body")
    if problem["type"] == "extra_forbidden":
        return OpenAIError(400, f"Unsupported parameter: '{param}'.", param=param, code="unsupported_parameter")
    if problem["type"] == "missing":
        message = f"Missing required parameter: '{param}'."
        return OpenAIError(400, message, param=param, code="missing_required_parameter")
    return OpenAIError(400, f"Invalid value for '{param}': {problem['msg']}.", param=param, code="invalid_value")


def pipeline_error(error: Exception) -> OpenAIError:
    """A pipeline failure: 400 for the inputs it refuses (`ValueError`), else 500."""
    if isinstance(error, ValueError):
        return OpenAIError(400, str(error))
    return OpenAIError(500, f"Generation failed: {error}", type="server_error")


def usage(prompt_lengths: list[int], completions: list[Completion], n: int) -> dict:
    prompt_tokens = sum(prompt_lengths)
    completion_tokens = sum(completion.completion_tokens for completion in completions)
    return {
        "prompt_tokens": prompt_tokens * n,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens * n + completion_tokens,
    }


def create_app(
    pipe: ColaDLMPipeline,
    model_name: str,
    api_key: str | None = None,
    max_tokens_limit: int = 512,
    default_max_tokens: int = 64,
    max_queue: int = 64,
    max_batch_size: int = 16,
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
    """
    engine = GenerationEngine(pipe, max_queue=max_queue, max_batch_size=max_batch_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = asyncio.create_task(engine.run())
        yield
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    app = FastAPI(title="Cola-DLM", lifespan=lifespan)
    app.state.engine = engine

    @app.middleware("http")
    async def check_api_key(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
                return error_response(OpenAIError(401, "Invalid or missing API key.", code="invalid_api_key"))
        return await call_next(request)

    @app.exception_handler(OpenAIError)
    async def handle_openai_error(request: Request, exc: OpenAIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, exc: RequestValidationError):
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, exc: StarletteHTTPException):
        return error_response(OpenAIError(exc.status_code, str(exc.detail)))

    def prepare(
        body: GenerationRequest, inputs: list, chat: bool, max_tokens: int | None
    ) -> tuple[GenerationJob, list[int]]:
        """Checks a request against the model and turns it into a job; returns it with its prompts' lengths."""
        if body.model != model_name:
            raise OpenAIError(404, f"The model '{body.model}' does not exist.", param="model", code="model_not_found")
        max_tokens = default_max_tokens if max_tokens is None else max_tokens
        if max_tokens > max_tokens_limit:
            raise OpenAIError(
                400, f"`max_tokens` must be at most {max_tokens_limit}, got {max_tokens}.", param="max_tokens"
            )
        if chat and IM_START_TOKEN not in pipe.tokenizer.get_vocab():
            raise OpenAIError(
                400,
                f"The model '{model_name}' has no chat format (its tokenizer lacks {IM_START_TOKEN}); "
                "use /v1/completions.",
                param="messages",
            )
        param = "messages" if chat else "prompt"
        token_ids = pipe.tokenize(messages=inputs) if chat else pipe.tokenize(prompt=inputs)
        max_prompt_tokens = pipe.tokenizer.model_max_length - max_tokens
        for index, ids in enumerate(token_ids):
            if not ids:
                raise OpenAIError(400, f"`prompt[{index}]` tokenizes to no tokens.", param=param)
            if len(ids) > max_prompt_tokens:
                raise OpenAIError(
                    400,
                    f"`prompt[{index}]` has {len(ids)} tokens; at most {max_prompt_tokens} fit with "
                    f"max_tokens={max_tokens}.",
                    param=param,
                    code="context_length_exceeded",
                )
        settings = GenerationSettings(
            max_tokens=max_tokens,
            num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale,
            block_length=body.block_length,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            stop=body.stop_strings(),
        )
        seed = random.randrange(2**62) if body.seed is None else body.seed
        rows = [item for item in inputs for _ in range(body.n)]
        job = GenerationJob(
            inputs=rows, seeds=[seed + i for i in range(len(rows))], settings=settings, chat=chat, stream=body.stream
        )
        try:
            engine.submit(job)
        except asyncio.QueueFull:
            raise OpenAIError(
                503, "The server is busy; retry later.", type="server_error", code="server_overloaded"
            ) from None
        return job, [len(ids) for ids in token_ids]

    async def wait_for(job: GenerationJob) -> list[Completion]:
        try:
            return await job.result
        except Exception as error:
            raise pipeline_error(error) from None

    async def stream_events(job: GenerationJob, header: dict, chat: bool, include_usage: bool, prompt_lengths, n):
        """The SSE events of a streamed job: a chunk per block, a chunk per choice with its finish reason, [DONE]."""

        def event(choices: list[dict], **extra) -> str:
            return f"data: {json.dumps({**header, 'choices': choices, **extra})}\n\n"

        def choice(index: int, text: str | None = None, finish_reason: str | None = None, role: bool = False) -> dict:
            if not chat:
                return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        try:
            if chat:
                yield event([choice(index, "", role=True) for index in range(len(job.inputs))])
            while True:
                item = await job.chunks.get()
                if isinstance(item, Exception):
                    yield f"data: {json.dumps(pipeline_error(item).body)}\n\n"
                    break
                if isinstance(item, list):
                    yield event([choice(index, None if chat else "", c.finish_reason) for index, c in enumerate(item)])
                    if include_usage:
                        yield event([], usage=usage(prompt_lengths, item, n))
                    break
                choices = [choice(index, text) for index, text in enumerate(item.texts) if text]
                if choices:
                    yield event(choices)
            yield "data: [DONE]\n\n"
        finally:
            engine.cancel(job)

    async def respond(body: GenerationRequest, inputs: list, chat: bool, max_tokens: int | None):
        job, prompt_lengths = prepare(body, inputs, chat, max_tokens)
        header = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": ("chat.completion" if chat else "text_completion") + (".chunk" if chat and body.stream else ""),
            "created": int(time.time()),
            "model": model_name,
        }
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            events = stream_events(job, header, chat, include_usage, prompt_lengths, body.n)
            return StreamingResponse(events, media_type="text/event-stream")
        completions = await wait_for(job)
        if chat:
            choices = [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": completion.text},
                    "logprobs": None,
                    "finish_reason": completion.finish_reason,
                }
                for index, completion in enumerate(completions)
            ]
        else:
            choices = [
                {"index": index, "text": completion.text, "logprobs": None, "finish_reason": completion.finish_reason}
                for index, completion in enumerate(completions)
            ]
        return {**header, "choices": choices, "usage": usage(prompt_lengths, completions, body.n)}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        return await respond(body, prompts, chat=False, max_tokens=body.max_tokens)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        conversation = [message.to_pipeline() for message in body.messages]
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return await respond(body, [conversation], chat=True, max_tokens=max_tokens)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "cola-diffusers"}],
        }

    @app.get("/health")
    async def health():
        return {"status": "ok", "queued": engine.num_jobs, "max_queue": engine.max_queue}

    return app
