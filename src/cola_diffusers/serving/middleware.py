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

"""[`RequestGate`]: the pure-ASGI middleware that checks the API key and bounds the request body."""

import hmac

from .errors import error_response
from .protocol import OpenAIError


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
