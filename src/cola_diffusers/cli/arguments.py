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

"""Argument types that refuse bad values while parsing, and the arguments several commands share."""

import argparse
import math
import os
import re
import sys

from ..demo import DEMO_MODELS
from ..generation.chat import CHAT_FORMATS
from ..generation.inputs import DEFAULTS, LIMITS, MAX_SEED
from ..loaders.layout import REPO_ID, is_official_layout
from ..schedulers import SCHEDULERS


# The dtype names of every sub-command, as the Python API (`loaders.dtypes.DTYPES`) spells them; short ones become long.
DTYPES = ["auto", "float32", "bfloat16", "float16"]
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def dtype_name(value: str) -> str:
    """A dtype name, its short spelling (`bf16`, `fp16`, `fp32`) turned into the long one."""
    return DTYPE_ALIASES.get(value, value)


def add_dtype_argument(parser: argparse.ArgumentParser, default: str = "auto"):
    """`--dtype`, in the spellings every sub-command accepts."""
    choices = DTYPES if default == "auto" else DTYPES[1:]
    parser.add_argument(
        "--dtype",
        type=dtype_name,
        choices=choices,
        default=default,
        help=f"Weights' dtype: {', '.join(choices)} (or bf16, fp16, fp32)"
        + ("; auto keeps the checkpoint's." if default == "auto" else "."),
    )


def task_list(value: str) -> list[str]:
    """Comma-separated task names, each one of the evaluation tasks."""
    from ..evaluation.data import TASK_NAMES

    tasks = [task.strip() for task in value.split(",") if task.strip()]
    unknown = [task for task in tasks if task not in TASK_NAMES]
    if not tasks or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown task {unknown[0] if unknown else value!r}; the tasks are {', '.join(TASK_NAMES)}"
        )
    return tasks


def holds_model(path: str) -> bool:
    """Whether `path` is a folder with a pipeline in the diffusers format or in the official layout."""
    return os.path.isfile(os.path.join(path, "model_index.json")) or is_official_layout(path)


def existing_path_or_repo(value: str) -> str:
    """
    A local folder, a Hub repo id (`owner/name`) or an embedded demo model's name (`demo`, `demo-fast`); anything else
    is refused before loading.
    """
    if value in DEMO_MODELS:
        if not os.path.exists(value):
            return DEMO_MODELS[value]
        if not holds_model(value):
            # `eval run --output demo` makes a folder of that name: the name still means the demo model.
            print(f"note: {value!r} is the embedded demo model; ./{value} holds no model.", file=sys.stderr)
            return DEMO_MODELS[value]
    if os.path.isdir(value) or (REPO_ID.fullmatch(value) and not os.path.exists(value)):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is neither a checkpoint folder, a Hub repo id (owner/name) nor one of {sorted(DEMO_MODELS)}"
    )


def official_checkpoint(value: str) -> str:
    """A folder in the official release layout, or a Hub repo id."""
    value = existing_path_or_repo(value)
    if os.path.isdir(value) and not is_official_layout(value):
        raise argparse.ArgumentTypeError(f"{value} is not in the official layout (no `cola_dlm/` folder)")
    return value


def integer(value: str) -> int:
    """An integer, refused in argparse's one line otherwise."""
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {value!r}") from None


def finite_float(value: str) -> float:
    """A finite number: nan and inf are refused."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    return number


def positive_int(value: str) -> int:
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return number


def int_range(low: int, high: int):
    """The type of an integer from `low` to `high`."""

    def bounded_int(value: str) -> int:
        number = integer(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {value}")
        return number

    return bounded_int


def non_negative_float(value: str) -> float:
    number = finite_float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def probability(value: str) -> float:
    number = finite_float(value)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not (0 < number < math.inf):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return number


def seed_or_random(value: str) -> int | None:
    """A seed from 0 to `MAX_SEED`, or None for `random`."""
    if value == "random":
        return None
    if not value.isdigit() or int(value) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, or random, got {value}")
    return int(value)


# torch's device names: a type, then an optional index (`cpu`, `cuda`, `cuda:1`, `mps`, `xpu:0`).
DEVICE = re.compile(r"(cpu|cuda|mps|xpu|npu|hpu|mtia)(:\d+)?")


def device_name(value: str) -> str:
    """A torch device name; whether this machine has it is checked before the model loads."""
    if not DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"must be a device such as cpu, cuda, cuda:1 or mps, got {value!r}")
    return value


def environment(name: str, default, kind=str):
    """The official adapter's `COLA_*` environment variable `name` as a default, else `default`."""
    value = os.environ.get(name)
    return default if value in (None, "") else kind(value)


def add_model_arguments(parser: argparse.ArgumentParser, device: str = "CUDA where there is one, else the CPU"):
    parser.add_argument(
        "--model",
        default="demo",
        type=existing_path_or_repo,
        help="Checkpoint folder (either layout), Hub repo id, or `demo` / `demo-fast` (the embedded demo model and"
        " its one-step student).",
    )
    add_dtype_argument(parser)
    parser.add_argument("--device", type=device_name, help=f"Where the model runs; default {device}.")


def add_context_arguments(parser: argparse.ArgumentParser, chat: str, new_tokens: str):
    """`--chat-format` and `--max-model-len`, shared by `generate` and `serve`."""
    parser.add_argument(
        "--chat-format",
        choices=list(CHAT_FORMATS),
        help=f"How the messages {chat} become a prompt; default the checkpoint's, else plain.",
    )
    parser.add_argument(
        "--max-model-len",
        type=int_range(2, LIMITS.max_sequence_length),
        help=f"Prompt plus {new_tokens} at most; default the checkpoint's, else 4096.",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, gen_length: int):
    parser.add_argument(
        "--gen-length",
        type=int_range(1, LIMITS.max_sequence_length - 1),
        default=gen_length,
        help="New tokens per prompt.",
    )
    parser.add_argument(
        "--steps",
        type=int_range(1, LIMITS.num_inference_steps),
        help=f"Denoising steps per block; default the checkpoint's, else {DEFAULTS.num_inference_steps}.",
    )
    parser.add_argument(
        "--guidance",
        type=non_negative_float,
        help=f"Guidance scale; default the checkpoint's, else {DEFAULTS.guidance_scale:g}.",
    )
    parser.add_argument("--scheduler", default="block-causal", choices=list(SCHEDULERS), help="The ODE solver.")
    parser.add_argument(
        "--temperature", type=non_negative_float, default=DEFAULTS.temperature, help="Token sampling; 0 is greedy."
    )
