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
`cola-diffusers serve --replicas N` on Ray Serve, and `build_app`, the application builder of `serve run` and Serve
config files (`import_path: cola_diffusers.cli.replicas:build_app`). Ray is imported only here, when it is used.
"""

import argparse
import functools

from .commands import app_options, check_port, load_served_pipeline, served_model_name
from .parsers import add_serve_parser


# The `serve` flags a Serve config sets elsewhere than in its `args`, and where.
CONFIG_SETTINGS = {
    "host": "http_options: host",
    "port": "http_options: port",
    "timeout_keep_alive": "http_options: keep_alive_timeout_s",
    "limit_concurrency": "the deployment's max_queued_requests",
    "address": "`serve run --address` or $RAY_ADDRESS",
}


def check_ray_serve():
    """Raises a `ValueError` naming `--replicas` when Ray Serve cannot be imported."""
    try:
        from ray import serve  # noqa: F401
    except ImportError as error:
        raise ValueError(
            f'--replicas runs on Ray Serve, which is not installed ({error}): pip install "cola-diffusers[ray]".'
        ) from None


def replica_gpus(args) -> int:
    """One GPU per replica where the replicas run on CUDA: `--device cuda`, or no `--device` on a machine with CUDA."""
    if args.device is None:
        import torch

        return int(torch.cuda.is_available())
    if args.device.startswith("cuda:"):
        raise ValueError(
            f"--device {args.device}: with --replicas, Ray gives each replica a GPU of its own; pass --device cuda."
        )
    return int(args.device == "cuda")


def replica_application(args):
    """The Ray Serve application of `serve`'s flags: `--replicas` replicas, each loading `--model` as `serve` does."""
    num_gpus = replica_gpus(args)
    check_ray_serve()  # after the flags: a flag error answers without importing Ray

    from ..serving.ray_serve import replicated_app

    load_pipeline = functools.partial(load_served_pipeline, args)
    return replicated_app(
        load_pipeline, served_model_name(args), app_options(args), num_replicas=args.replicas, num_gpus=num_gpus
    )


def serve_on_ray(args):
    """`cola-diffusers serve --replicas N`: the application on Ray Serve, on a new local Ray or on `--address`."""
    if args.limit_concurrency is not None:
        raise ValueError(
            "--limit-concurrency is uvicorn's and does not apply with --replicas; Ray Serve's max_queued_requests "
            "bounds the requests waiting for a replica (see docs/serving.md)."
        )
    if args.address is None:
        check_port(args.host, args.port)
    application = replica_application(args)

    from ..serving.ray_serve import serve_replicas

    try:
        serve_replicas(
            application, args.host, args.port, address=args.address, timeout_keep_alive=args.timeout_keep_alive
        )
    except RuntimeError as error:
        # Ray Serve gave up on the replicas (a model that does not load, say); their errors are logged above.
        raise OSError(f"{error} The replicas' errors are above.") from None


class FlagParser(argparse.ArgumentParser):
    """An argument parser that raises a `ValueError` where `cola-diffusers` would exit."""

    def error(self, message):
        raise ValueError(f"args: {message}")


def flag_arguments(args: dict) -> list[str]:
    """
    The `serve` command line of a Serve config's `args`: `name: value` becomes `--name value` (`_` or `-` alike),
    `name: true` the flag alone, `name: false` nothing, and a list the flag's several values.
    """
    argv = []
    for name, value in args.items():
        key = name.replace("-", "_")
        if key in CONFIG_SETTINGS:
            raise ValueError(f"args: {name} is not an argument of the application; set {CONFIG_SETTINGS[key]}.")
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return argv


def build_app(args: dict):
    """
    The application builder of `serve run` and Serve config files: `args` are `cola-diffusers serve` flags without
    their dashes (`model: demo`, `served_model_name: cola-dlm`, `replicas: 2`), checked as the command checks them.
    The listener is the config's `http_options`, and a deployment's settings there (`num_replicas`,
    `autoscaling_config`, `ray_actor_options`) override those of the flags.
    """
    commands = argparse.ArgumentParser().add_subparsers(parser_class=FlagParser)
    add_serve_parser(commands)
    defaults = argparse.Namespace(debug=False, verbose=False)
    return replica_application(commands.choices["serve"].parse_args(flag_arguments(args), namespace=defaults))
