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
The OpenAI-compatible server as replicas on Ray Serve (`pip install "cola-diffusers[ray]"`): each replica loads its
own pipeline and serves the app of [`create_app`] on it; Ray Serve's proxy spreads the requests over the replicas,
and Ray replaces a replica whose process dies.
"""

import signal
from collections.abc import Callable

import ray
from ray import serve

from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .app import create_app
from .middleware import with_header


APPLICATION_NAME = "cola-dlm"
REPLICA_HEADER = b"x-replica-id"


class ReplicaHeader:
    """Pure-ASGI middleware that names the replica which answered in every response's `X-Replica-Id` header."""

    def __init__(self, app, replica_id: str):
        self.app = app
        self.replica_id = replica_id.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            send = with_header(send, REPLICA_HEADER, self.replica_id)
        await self.app(scope, receive, send)


@serve.deployment
@serve.ingress()
class ColaDLMServer:
    """
    A replica: loads its pipeline with `load_pipeline` and serves it as `model_name` with
    `create_app(pipe, model_name, **app_options)`. Ray Serve runs the app's lifespan, and with it the generation
    worker, on the replica's event loop before the replica takes requests.
    """

    def __init__(self, load_pipeline: Callable[[], ColaDLMPipeline], model_name: str, app_options: dict):
        self.pipe = load_pipeline()
        self.model_name = model_name
        self.app_options = app_options

    def __serve_build_asgi_app__(self):
        app = create_app(self.pipe, self.model_name, **self.app_options)
        app.add_middleware(ReplicaHeader, replica_id=serve.get_replica_context().replica_tag)
        return app


def replicated_app(
    load_pipeline: Callable[[], ColaDLMPipeline],
    model_name: str,
    app_options: dict,
    *,
    num_replicas: int | None = None,
    num_gpus: float = 0,
) -> serve.Application:
    """
    The Ray Serve application of `ColaDLMServer` replicas, each loading its pipeline with `load_pipeline` (a picklable
    callable) and serving `create_app(pipe, model_name, **app_options)`.

    Args:
        load_pipeline (`Callable[[], ColaDLMPipeline]`): Loads a replica's pipeline, in the replica's process.
        model_name (`str`): The model id clients pass as `model`.
        app_options (`dict`): The keyword arguments of [`create_app`]; every replica takes up to its `max_queue`
            requests (64 by default) before Ray Serve's proxy holds the next ones for another replica.
        num_replicas (`int`, *optional*): Replicas; default Ray Serve's, or that of a config file (which may set
            `autoscaling_config` instead).
        num_gpus (`float`, defaults to 0): GPUs Ray reserves for each replica (and makes the only ones it sees).
    """
    options = {
        "max_ongoing_requests": app_options.get("max_queue", 64),
        "ray_actor_options": {"num_gpus": num_gpus},
    }
    if num_replicas is not None:
        options["num_replicas"] = num_replicas
    return ColaDLMServer.options(**options).bind(load_pipeline, model_name, app_options)


def serve_replicas(
    application: serve.Application,
    host: str,
    port: int,
    *,
    address: str | None = None,
    timeout_keep_alive: int = 5,
):
    """
    Runs `application` on Ray Serve, its proxy listening on `host:port`, on the Ray cluster at `address` (`auto`,
    `HOST:PORT`, `ray://...`), default a new Ray on this machine. On Ctrl-C or SIGTERM the application is deleted,
    its replicas stopped, and a Ray this call started stops with the process.
    """
    ray.init(address=address or "local")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    serve.start(http_options={"host": host, "port": port, "keep_alive_timeout_s": timeout_keep_alive})
    try:
        serve.run(application, name=APPLICATION_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APPLICATION_NAME)
