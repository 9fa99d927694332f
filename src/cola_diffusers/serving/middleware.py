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
The pure-ASGI middleware in front of the app: [`RequestGate`] checks the API key and bounds the request body,
[`RequestLog`] logs one line per request.
"""

import asyncio
import hmac
import logging
import time

from .errors import error_response
from .protocol import OpenAIError


logger = logging.getLogger("cola_diffusers.serving")


def has_body(scope) -> bool:
    """Whether the request announces a body (a `Content-Length` above 0, or a chunked one)."""
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


def with_header(send, name: bytes, value: bytes):
    """`send` that adds the header `name: value` to the response."""

    async def send_with_header(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return send_with_header


def closing_after_response(send):
    """`send` that answers with `Connection: close`."""
    return with_header(send, b"connection", b"close")


class RequestGate:
    """
    Checks the API key of `/v1` requests, then reads the body of a `POST` to one of `body_paths`, at most
    `max_request_bytes` of it (413 beyond) within `body_timeout` seconds (408 after), before the app sees it. Other
    requests (refused, unknown routes, wrong methods, `GET`s) reach no body read: their answer does not wait for one.
    The app then receives the body, and after it the client's disconnect, as from the server itself.
    """

    def __init__(
        self, app, body_paths: frozenset[str], api_key: str | None, max_request_bytes: int, body_timeout: float
    ):
        self.app = app
        self.body_paths = body_paths
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = self.refusal(scope)
        if error is None and self.reads_body(scope):
            try:
                async with asyncio.timeout(self.body_timeout):
                    error, receive = await self.read_body(scope, receive)
            except TimeoutError:
                message = f"The request body did not arrive within {self.body_timeout:g} seconds."
                error = OpenAIError(408, message, code="request_timeout")
            except ConnectionAbortedError:
                return
        if error is not None or not self.reads_body(scope):
            # The client may still be sending a body that nobody reads: the connection closes after the answer.
            send = closing_after_response(send) if has_body(scope) else send
        if error is not None:
            return await error_response(error)(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, scope) -> OpenAIError | None:
        """The error of a `/v1` request without exactly one `Authorization: Bearer <api_key>`, else None."""
        if self.api_key is None or not scope["path"].startswith("/v1/"):
            return None
        tokens = [value.decode("latin-1") for name, value in scope["headers"] if name.lower() == b"authorization"]
        scheme, _, token = tokens[0].partition(" ") if len(tokens) == 1 else ("", "", "")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return None
        message = "Invalid or missing API key."
        if len(tokens) > 1:
            message = f"Send one `Authorization` header, got {len(tokens)}."
        return OpenAIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def reads_body(self, scope) -> bool:
        """Whether the request goes to a route that reads a body."""
        return scope["method"] == "POST" and scope["path"] in self.body_paths

    async def read_body(self, scope, receive) -> tuple[OpenAIError | None, object]:
        """
        A 413 once the body is known to be too large (by its `Content-Length` or as it arrives), else None and the
        `receive` that replays the whole body. A client that hangs up raises `ConnectionAbortedError`.
        """
        too_large = OpenAIError(
            413, f"The request body is larger than {self.max_request_bytes} bytes.", code="request_too_large"
        )
        declared = [value for name, value in scope["headers"] if name.lower() == b"content-length"]
        if declared and declared[0].isdigit() and int(declared[0]) > self.max_request_bytes:
            return too_large, receive
        body, more_body = bytearray(), True
        while more_body:
            message = await receive()
            if message["type"] != "http.request":
                raise ConnectionAbortedError
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
            if len(body) > self.max_request_bytes:
                return too_large, receive
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return None, replay


class RequestLog:
    """
    Logs one line per request once it is answered: client, method, path, status, the completion tokens of a
    generation request (which its route leaves in the request's state as `job`) and the seconds it took.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), None
        state = scope.setdefault("state", {})

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            host, port = scope.get("client") or ("-", 0)
            job = state.get("job")
            tokens = f" {sum(choice.completion_tokens for choice in job.choices)} tokens" if job else ""
            seconds = time.perf_counter() - started
            logger.info(f'{host}:{port} "{scope["method"]} {scope["path"]}" {status}{tokens} {seconds:.3f} s')
