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
The `cola-diffusers` command: generate, serve, convert, train, eval.

Arguments are parsed and checked before torch, diffusers or transformers are imported, so `--help` and argument
errors answer at once; each command imports what it needs.
"""

import argparse
import os

from .commands import load_pipeline
from .parsers import (
    add_convert_parser,
    add_eval_parser,
    add_generate_parser,
    add_output_flags,
    add_serve_parser,
    add_train_parser,
)


__all__ = ["build_parser", "load_pipeline", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cola-diffusers", description="Cola-DLM text generation with diffusers.")
    add_output_flags(parser, default=False)
    commands = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(commands)
    add_serve_parser(commands)
    add_convert_parser(commands)
    add_eval_parser(commands)
    add_train_parser(commands)
    return parser


def main(argv: list[str] | None = None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        # Bad input names itself in one line; --debug (or COLA_DIFFUSERS_DEBUG=1) shows where it was found.
        if args.debug or os.environ.get("COLA_DIFFUSERS_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        parser.exit(2, f"cola-diffusers: error: {message}\n")
