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


"""Training checkpoints: written whole or not at all, found again with `"latest"`, and kept to a limit."""

import json
import logging
import os
import pickle
import re
import shutil

from accelerate import Accelerator
from safetensors import SafetensorError

from ..loaders.files import reported_write_errors
from .config import TrainingConfig


logger = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# A checkpoint being written; renamed to `checkpoint-{step}` once every file is in it.
PARTIAL_SUFFIX = ".partial"
TRAINING_STATE = "training_state.json"


def complete_checkpoints(output_dir: str) -> list[str]:
    """The complete `checkpoint-{step}` folders in `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    steps = [int(match[1]) for name in os.listdir(output_dir) if (match := CHECKPOINT.fullmatch(name))]
    folders = [os.path.join(output_dir, f"checkpoint-{step}") for step in sorted(steps)]
    return [folder for folder in folders if os.path.isfile(os.path.join(folder, TRAINING_STATE))]


def partial_checkpoints(output_dir: str) -> list[str]:
    """The `checkpoint-{step}.partial` folders a run killed while saving left in `output_dir`."""
    if not os.path.isdir(output_dir):
        return []
    names = sorted(name for name in os.listdir(output_dir) if name.endswith(PARTIAL_SUFFIX))
    return [
        os.path.join(output_dir, name) for name in names if CHECKPOINT.fullmatch(name.removesuffix(PARTIAL_SUFFIX))
    ]


def resolve_resume(config: TrainingConfig) -> str | None:
    """The checkpoint `resume_from` names: a folder, the newest complete one for `"latest"`, or None."""
    if config.resume_from != "latest":
        return config.resume_from
    checkpoints = complete_checkpoints(config.output_dir)
    if not checkpoints and partial_checkpoints(config.output_dir):
        names = ", ".join(os.path.basename(folder) for folder in partial_checkpoints(config.output_dir))
        logger.warning(
            f'`resume_from` "latest": {config.output_dir} holds no complete checkpoint, only {names} of a run stopped'
            " while saving; training starts at step 0."
        )
    return checkpoints[-1] if checkpoints else None


def resume_state(accelerator: Accelerator, config: TrainingConfig) -> tuple[int, list[float]]:
    """
    Loads the checkpoint `resume_from` into the prepared run; returns its step and the loss of every step before it
    (0 and none without one). Unfinished checkpoints of an earlier run are removed.
    """
    folder = resolve_resume(config)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for partial in partial_checkpoints(config.output_dir):
            shutil.rmtree(partial)
    if folder is None:
        return 0, []
    try:
        accelerator.load_state(folder)
        with open(os.path.join(folder, TRAINING_STATE)) as file:
            state = json.load(file)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise ValueError(f"`resume_from`: cannot load the checkpoint {folder} ({reason}).") from error
    return state["step"], state.get("losses", [])


def save_checkpoint(accelerator: Accelerator, config: TrainingConfig, step: int, losses: list[float]):
    """
    Saves the optimiser, model, EMA, scheduler and RNG states and the losses so far to
    `output_dir/checkpoint-{step}`: into a `.partial` folder first, renamed once complete, so that a run killed while
    saving leaves the last checkpoint the newest complete one. With `checkpoints_total_limit` the oldest checkpoints
    are deleted once the new one is complete.
    """
    folder = os.path.join(config.output_dir, f"checkpoint-{step}")
    partial = folder + PARTIAL_SUFFIX
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    with reported_write_errors(folder, remove=partial):
        accelerator.save_state(partial)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(os.path.join(partial, TRAINING_STATE), "w") as file:
                json.dump({"step": step, "losses": losses}, file)
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        if config.checkpoints_total_limit is not None:
            for old in complete_checkpoints(config.output_dir)[: -config.checkpoints_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
