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

"""The OpenAPI description of the app (`/openapi.json`): its OpenAI-style errors, its key, no FastAPI 422s."""

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from .validation import ServingConfig


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


def error_responses(*statuses: int, stream: bool = False) -> dict:
    """The `responses` of a route: its error `statuses`, and with `stream` its server-sent events."""
    reasons = {
        400: "Malformed JSON, a value of the wrong type or out of range, an unsupported field, a prompt too long",
        401: "A missing or wrong API key (with `WWW-Authenticate: Bearer`)",
        404: "A model that is not the served one",
        408: "A request body that did not arrive in time",
        413: "A request body larger than the limit",
        500: "An unexpected failure",
        503: "A full queue (with `Retry-After`)",
    }
    responses = {status: {"model": ErrorResponse, "description": reasons[status]} for status in statuses}
    if stream:
        responses[200] = {
            "content": {"text/event-stream": {}},
            "description": "The answer, or with `stream` its events",
        }
    return responses


def add_served_limits(schemas: dict, config: ServingConfig):
    """The request schemas with the served model's id as the only `model`, and the served limits of sizes."""
    max_tokens = min(config.max_tokens_limit, config.max_model_len - 1)
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        properties = schemas[name]["properties"]
        properties["model"]["enum"] = [config.model_name]
        for field in ("max_tokens", "max_completion_tokens"):
            for option in properties.get(field, {}).get("anyOf", []):
                if option.get("type") == "integer":
                    option["maximum"] = max_tokens
    schemas["CompletionRequest"]["properties"]["prompt"]["anyOf"][1]["maxItems"] = config.max_rows_per_request


def openapi_schema(app: FastAPI, config: ServingConfig, secured: bool) -> dict:
    """
    The app's OpenAPI schema, as FastAPI builds it less the 422 answers the app never gives (its validation errors
    are 400s), with the served model and limits (see [`add_served_limits`]); with `secured`, the bearer scheme that
    every `/v1` operation requires.
    """
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        add_served_limits(schema["components"]["schemas"], config)
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                if secured and path.startswith("/v1/"):
                    operation["security"] = [{"bearer": []}]
        for name in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(name, None)
        if secured:
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        app.openapi_schema = schema
    return app.openapi_schema
