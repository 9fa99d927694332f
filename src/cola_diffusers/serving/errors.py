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

"""OpenAI-style errors: failures as [`OpenAIError`]s, and the app's exception handlers that answer them."""

import json

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..generation.inputs import PromptTooLongError
from .protocol import OpenAIError


def quoted(text: str, limit: int = 64) -> str:
    """`text` in quotes, cut to its first `limit` characters: error bodies do not echo long inputs."""
    return f"'{text}'" if len(text) <= limit else f"'{text[:limit]}...' ({len(text)} characters)"


def error_response(error: OpenAIError) -> Response:
    """`error` as its JSON body (ASCII, so any text it quotes can be sent) with its status code and headers."""
    return Response(
        json.dumps(error.body), status_code=error.status_code, headers=error.headers, media_type="application/json"
    )


def is_union_member(part: str | int) -> bool:
    """Whether a part of a validation error's location names the member of a union (`str`, `list[...]`), no field."""
    return isinstance(part, str) and (part in {"str", "int", "float", "bool"} or not part.isidentifier())


def validation_error(exc: RequestValidationError) -> OpenAIError:
    """
    A validation problem of a request body as a 400 error, names quoted by a short prefix: the deepest one, which for
    a value that may take several types is the problem of the type it has.
    """
    problem = max(exc.errors(), key=lambda error: len(error["loc"]))
    param = ".".join(str(part) for part in problem["loc"][1:] if not is_union_member(part))[:64] or None
    if problem["type"] == "json_invalid":
        return OpenAIError(400, "The request body is not valid JSON.", code="invalid_json")
    if param is None:
        message = "The request body must be a JSON object sent with `Content-Type: application/json`."
        return OpenAIError(400, message, code="invalid_body")
    if problem["type"] == "extra_forbidden":
        name = quoted(str(problem["loc"][-1]))
        return OpenAIError(400, f"Unsupported parameter: {name}.", param=param, code="unsupported_parameter")
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


async def handle_openai_error(request: Request, exc: OpenAIError) -> Response:
    return error_response(exc)


async def handle_validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(validation_error(exc))


async def handle_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Starlette's own errors (unknown path, wrong method, with its `Allow` header) in the OpenAI format."""
    return error_response(OpenAIError(exc.status_code, str(exc.detail), headers=exc.headers))


async def handle_unexpected_error(request: Request, exc: Exception) -> Response:
    """Any other failure: a 500 in the OpenAI format (the traceback goes to the server's log)."""
    return error_response(OpenAIError(500, "The server failed to answer the request.", type="server_error"))


EXCEPTION_HANDLERS = {
    OpenAIError: handle_openai_error,
    RequestValidationError: handle_validation_error,
    StarletteHTTPException: handle_http_error,
    Exception: handle_unexpected_error,
}
