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

from ..generation.chat import CHAT_FORMATS
from ..generation.inputs import PromptTooLongError
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .engine import Completion, GenerationEngine, GenerationJob, GenerationSettings
from .protocol import ChatCompletionRequest, CompletionRequest, GenerationRequest, OpenAIError


def error_response(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status_code)


class RequestGate:
    """
    ASGI middleware in front of the app: checks the API key of `/v1` requests and reads every request body, at
    most `max_request_bytes` of it (413 beyond, without reading the rest), before the app sees the request. The
    app then receives the body, and after it the client's disconnect, as from the server itself.
    """

    def __init__(self, app, api_key: str | None, max_request_bytes: int):
        self.app = app
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        if self.api_key is not None and scope["path"].startswith("/v1/"):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self.api_key.encode()):
                error = OpenAIError(401, "Invalid or missing API key.", code="invalid_api_key")
                return await error_response(error)(scope, receive, send)
        too_large = OpenAIError(
            413,
            f"The request body is larger than {self.max_request_bytes} bytes.",
            code="request_too_large",
        )
        if int(headers.get("content-length", "0") or 0) > self.max_request_bytes:
            return await error_response(too_large)(scope, receive, send)
        body, more_body = bytearray(), True
        while more_body:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
            if len(body) > self.max_request_bytes:
                return await error_response(too_large)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def wait_for_disconnect(request: Request):
    """Returns when the client of `request`, whose body has been read, hangs up."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
    if isinstance(error, PromptTooLongError):
        return OpenAIError(400, str(error), code="context_length_exceeded")
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

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = asyncio.create_task(engine.run())
        yield
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    app = FastAPI(title="Cola-DLM", lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(RequestGate, api_key=api_key, max_request_bytes=max_request_bytes)

    @app.exception_handler(OpenAIError)
    async def handle_openai_error(request: Request, exc: OpenAIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, exc: RequestValidationError):
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, exc: StarletteHTTPException):
        return error_response(OpenAIError(exc.status_code, str(exc.detail)))

    async def prepare(
        body: GenerationRequest, inputs: list, chat: bool, max_tokens: int | None
    ) -> tuple[GenerationJob, list[int]]:
        """
        Checks a request against the model and queues it as a job; returns it with its prompts' lengths. Prompts
        are tokenised off the event loop, and refused there when too long, so they never reach the worker.
        """
        if body.model != model_name:
            raise OpenAIError(404, f"The model '{body.model}' does not exist.", param="model", code="model_not_found")
        max_tokens = default_max_tokens if max_tokens is None else max_tokens
        if max_tokens > max_tokens_limit:
            raise OpenAIError(
                400, f"`max_tokens` must be at most {max_tokens_limit}, got {max_tokens}.", param="max_tokens"
            )
        param = "messages" if chat else "prompt"
        if max_tokens >= max_model_len:
            message = f"`max_tokens` must be below the context of {max_model_len} tokens, got {max_tokens}."
            raise OpenAIError(400, message, param="max_tokens", code="context_length_exceeded")
        inputs_kwargs = {"messages": inputs, "chat_format": chat_format} if chat else {"prompt": inputs}
        try:
            token_ids = await asyncio.to_thread(pipe.tokenize, **inputs_kwargs, max_tokens=max_model_len - max_tokens)
        except ValueError as error:
            error = pipeline_error(error)
            error.body["error"]["param"] = param
            raise error from None
        settings = GenerationSettings(
            max_tokens=max_tokens,
            num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale,
            block_length=body.block_length,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            stop=body.stop_strings(),
            chat_format=chat_format if chat else None,
            max_sequence_length=max_model_len,
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

    async def wait_for(job: GenerationJob, request: Request) -> list[Completion]:
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

    async def respond(request: Request, body: GenerationRequest, inputs: list, chat: bool, max_tokens: int | None):
        job, prompt_lengths = await prepare(body, inputs, chat, max_tokens)
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
        completions = await wait_for(job, request)
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
    async def completions(request: Request, body: CompletionRequest):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        return await respond(request, body, prompts, chat=False, max_tokens=body.max_tokens)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatCompletionRequest):
        conversation = [message.to_pipeline() for message in body.messages]
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return await respond(request, body, [conversation], chat=True, max_tokens=max_tokens)

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
