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

"""The parser of each sub-command, added to the sub-parsers `commands` of `cola-diffusers` (or of `eval`)."""

import argparse

from ..generation.inputs import DEFAULTS, LIMITS
from .arguments import (
    add_context_arguments,
    add_dtype_argument,
    add_model_arguments,
    add_sampling_arguments,
    environment,
    int_range,
    official_checkpoint,
    positive_float,
    positive_int,
    probability,
    seed_or_random,
    task_list,
)
from .commands import convert, eval_run, eval_score, generate, serve, train


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the default of an argument that has one: not of a flag, nor where the help already states it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_output_flags(parser: argparse.ArgumentParser, default=argparse.SUPPRESS):
    """
    `--debug` and `--verbose`: on the main parser (off by default) and on every sub-command, where they default to
    unset, so that a flag given before the sub-command holds.
    """
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="Show the traceback of an error (or set COLA_DIFFUSERS_DEBUG=1).",
    )
    parser.add_argument(
        "--verbose", action="store_true", default=default, help="Show loading bars and the libraries' warnings."
    )


OUTPUT_FLAGS = argparse.ArgumentParser(add_help=False)
add_output_flags(OUTPUT_FLAGS)


def add_generate_parser(commands):
    parser = commands.add_parser(
        "generate", parents=[OUTPUT_FLAGS], help="Generate text from prompts.", formatter_class=DefaultsFormatter
    )
    parser.add_argument("prompt", nargs="*", help='Prompts; the embedded demo model reverses digits: "1234>".')
    parser.add_argument("--prompt-file", help="More prompts: one per line, or JSONL with a 'prompt' field.")
    add_model_arguments(parser)
    add_sampling_arguments(parser, gen_length=DEFAULTS.gen_length)
    parser.add_argument("--top-k", type=positive_int, help="Keep the k likeliest tokens (temperature > 0).")
    parser.add_argument("--top-p", type=probability, help="Nucleus sampling mass (temperature > 0).")
    parser.add_argument(
        "--block-length",
        type=int_range(1, LIMITS.block_length),
        help="Latents per block; default the model's block size.",
    )
    parser.add_argument("--seed", type=int_range(0, 2**62 - 1), default=0, help="Prompt i generates with seed + i.")
    parser.add_argument("--stream", action="store_true", help="Print the text block by block.")
    parser.add_argument("--chat", action="store_true", help="Send each prompt as one user chat message.")
    add_context_arguments(parser, chat="with --chat (implied)", new_tokens="new tokens")
    parser.add_argument("--output", choices=["text", "json"], default="text", help="json: a line per prompt.")
    parser.set_defaults(func=generate)


def add_serve_parser(commands):
    parser = commands.add_parser(
        "serve", parents=[OUTPUT_FLAGS], help="Serve an OpenAI-compatible API.", formatter_class=DefaultsFormatter
    )
    add_model_arguments(parser, device="$COLA_DEVICE, else CUDA where there is one, else the CPU")
    parser.set_defaults(device=environment("COLA_DEVICE", None))
    parser.add_argument(
        "--served-model-name",
        "--model-name",
        default=environment("COLA_MODEL_NAME", None),
        help="The id clients pass as `model` (the official adapter's is cola-dlm); default $COLA_MODEL_NAME, else "
        "the folder name or repo id.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="The address to listen on; 0.0.0.0 for every one.")
    parser.add_argument("--port", type=int_range(0, 65535), default=8000, help="The port to listen on.")
    parser.add_argument(
        "--api-key", default=environment("COLA_API_KEY", None), help="Require `Authorization: Bearer KEY`."
    )
    add_context_arguments(parser, chat="of chat requests", new_tokens="max_tokens")
    parser.add_argument(
        "--seed",
        type=seed_or_random,
        default=0,
        help="The seed of requests that set none, so that they repeat (choice i uses seed + i); `random` for a "
        "random one per request.",
    )
    parser.add_argument(
        "--allowed-origins", nargs="+", help='Origins whose browsers may call the API (CORS); "*" for any.'
    )
    parser.add_argument("--disable-fastapi-docs", action="store_true", help="Serve no /docs, /redoc or /openapi.json.")
    add_serve_limit_arguments(parser)
    add_replica_arguments(parser)
    parser.set_defaults(func=serve)


def add_serve_limit_arguments(parser):
    """The limits of `serve`: request sizes, the queue and batches, and the time a client may take."""
    parser.add_argument(
        "--max-tokens-limit",
        type=positive_int,
        default=environment("COLA_MAX_NEW_TOKENS_LIMIT", None, int),
        help="The largest max_tokens a request may ask for; default $COLA_MAX_NEW_TOKENS_LIMIT, else the context "
        "(--max-model-len) less one.",
    )
    parser.add_argument(
        "--default-max-tokens",
        type=positive_int,
        default=environment("COLA_DEFAULT_MAX_NEW_TOKENS", None, int),
        help="max_tokens of requests that set none; default $COLA_DEFAULT_MAX_NEW_TOKENS, else 64 or the limit.",
    )
    parser.add_argument(
        "--max-batch-size", type=positive_int, default=16, help="Rows (prompts times n) of the running batch."
    )
    parser.add_argument(
        "--max-rows-per-request", type=positive_int, default=256, help="Rows (prompts times n) a request may ask for."
    )
    parser.add_argument("--max-queue", type=positive_int, default=64, help="Requests waiting or running.")
    parser.add_argument("--max-request-bytes", type=positive_int, default=2**21, help="Larger request bodies get 413.")
    parser.add_argument(
        "--body-timeout", type=positive_float, default=30.0, help="Seconds a request body may take; then 408."
    )
    parser.add_argument(
        "--timeout-keep-alive",
        type=positive_int,
        default=5,
        help="Seconds a connection may take to send a request's headers, and may stay idle between requests.",
    )
    parser.add_argument(
        "--limit-concurrency", type=positive_int, help="Open connections and tasks at most; more get 503."
    )


def add_replica_arguments(parser):
    """`--replicas` and `--address` of `serve`: the same API from several replicas on Ray Serve."""
    parser.add_argument(
        "--replicas",
        type=positive_int,
        help="Serve with Ray Serve: this many replicas, one model each, behind one address (pip install "
        '"cola-diffusers[ray]"; see docs/serving.md).',
    )
    parser.add_argument(
        "--address",
        default=environment("RAY_ADDRESS", None),
        help="With --replicas, the Ray cluster to run on: `auto` for one started here with `ray start`, HOST:PORT "
        "for its head; default $RAY_ADDRESS, else a new Ray on this machine that stops with the command.",
    )


def add_convert_parser(commands):
    parser = commands.add_parser(
        "convert",
        parents=[OUTPUT_FLAGS],
        help="Convert the official layout to the diffusers format.",
        formatter_class=DefaultsFormatter,
    )
    parser.add_argument("--checkpoint-path", "--checkpoint_path", required=True, type=official_checkpoint)
    parser.add_argument("--output-path", "--output_path", required=True)
    add_dtype_argument(parser, default="float32")
    parser.add_argument("--overwrite", action="store_true", help="Write into a folder that is not empty.")
    parser.set_defaults(func=convert)


def add_eval_parser(commands):
    parser = commands.add_parser(
        "eval", parents=[OUTPUT_FLAGS], help="Run and score the official benchmark (see docs/evaluation.md)."
    )
    eval_commands = parser.add_subparsers(dest="eval_command", required=True)
    add_eval_run_parser(eval_commands)
    add_eval_score_parser(eval_commands)


def add_eval_run_parser(eval_commands):
    parser = eval_commands.add_parser(
        "run",
        parents=[OUTPUT_FLAGS],
        help="Generate the answers of benchmark tasks.",
        formatter_class=DefaultsFormatter,
    )
    add_model_arguments(parser, device="the process's accelerator, else the CPU")
    parser.add_argument(
        "--tasks",
        required=True,
        type=task_list,
        help="Comma-separated: lambada, mmlu, obqa, hellaswag, race, siqa, squad, story_cloze, reverse_digits.",
    )
    parser.add_argument("--data", help="Folder of <task>.jsonl records (not needed for reverse_digits).")
    parser.add_argument("--output", required=True, help="Folder for <task>.jsonl results.")
    parser.add_argument("--limit", type=positive_int, help="The first N records of every task.")
    parser.add_argument(
        "--batch-size", type=positive_int, default=20, help="Records per pipeline call; results do not depend on it."
    )
    add_sampling_arguments(parser, gen_length=DEFAULTS.gen_length)
    parser.add_argument(
        "--seed", type=int_range(0, 2**62 - 1), default=66, help="The first noise seed (the official benchmark's)."
    )
    parser.add_argument("--seeds", type=positive_int, default=1, help="Noise seeds, from --seed on.")
    parser.add_argument("--resume", action="store_true", help="Continue a run in --output with its settings.")
    parser.set_defaults(func=eval_run)


def add_eval_score_parser(eval_commands):
    parser = eval_commands.add_parser("score", parents=[OUTPUT_FLAGS], help="Score every <task>.jsonl of a folder.")
    parser.add_argument("folder", help="A folder of <task>.jsonl results; only read when --output is given.")
    parser.add_argument("--output", help="Folder of accuracy_summary.csv; default the results' folder.")
    parser.set_defaults(func=eval_score)


def add_train_parser(commands):
    parser = commands.add_parser(
        "train", parents=[OUTPUT_FLAGS], help="Train a stage from a JSON config (see docs/training.md)."
    )
    parser.add_argument("--config", required=True, help="JSON file of TrainingConfig settings.")
    parser.set_defaults(func=train)
