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
How `cola-diffusers serve` runs the app with uvicorn: h11 connections with a deadline for request headers, and
uvicorn's logging plus the app's line per request (in place of uvicorn's access log).
"""

import copy

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineH11Protocol(H11Protocol):
    """
    uvicorn's h11 protocol that also closes a connection whose next request has not begun (its headers all
    received) within `timeout_keep_alive` seconds of the connection's opening or of the previous response. uvicorn's
    own keep-alive timeout stops at the first byte, so a client sending headers a byte at a time would hold the
    connection for ever.
    """

    def connection_made(self, transport):
        super().connection_made(transport)
        self.arm_header_deadline()

    def on_response_complete(self):
        super().on_response_complete()
        self.arm_header_deadline()

    def arm_header_deadline(self):
        self.loop.call_later(self.timeout_keep_alive, self.close_unless_a_request_began, self.cycle)

    def close_unless_a_request_began(self, cycle):
        if self.cycle is cycle and not self.transport.is_closing():
            self.transport.close()


def serve_app(app, host: str, port: int, *, timeout_keep_alive: int = 5, limit_concurrency: int | None = None):
    """
    Runs `app` on `host:port` until interrupted. Connections close when a request's headers take longer than
    `timeout_keep_alive` seconds, or when idle that long; beyond `limit_concurrency` connections and tasks, uvicorn
    answers 503.
    """
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["cola_diffusers.serving"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=HeaderDeadlineH11Protocol,
        timeout_keep_alive=timeout_keep_alive,
        limit_concurrency=limit_concurrency,
        log_config=log_config,
        access_log=False,
    )
