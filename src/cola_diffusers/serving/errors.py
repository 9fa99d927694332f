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

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..generation.inputs import PromptTooLongError
from .protocol import OpenAIError


def error_response(error: OpenAIError) -> JSONResponse:
    """`error` as its JSON body with its status code."""
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
    if isinstance(error, PromptTooLongError):
        return OpenAIError(400, str(error), code="context_length_exceeded")
    if isinstance(error, ValueError):
        return OpenAIError(400, str(error))
    return OpenAIError(500, f"Generation failed: {error}", type="server_error")


async def handle_openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    return error_response(exc)


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(validation_error(exc))


async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method) in the OpenAI format."""
    return error_response(OpenAIError(exc.status_code, str(exc.detail)))


EXCEPTION_HANDLERS = {
    OpenAIError: handle_openai_error,
    RequestValidationError: handle_validation_error,
    StarletteHTTPException: handle_http_error,
}
