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
import os
import re
import shutil

from accelerate import Accelerator

from .config import TrainingConfig


CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# A checkpoint being written; renamed to `checkpoint-{step}` once every file is in it.
PARTIAL_SUFFIX = ".partial"


def complete_checkpoints(output_dir: str) -> list[str]:
    """The complete `checkpoint-{step}` folders in `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    steps = [int(match[1]) for name in os.listdir(output_dir) if (match := CHECKPOINT.fullmatch(name))]
    folders = [os.path.join(output_dir, f"checkpoint-{step}") for step in sorted(steps)]
    return [folder for folder in folders if os.path.isfile(os.path.join(folder, "training_state.json"))]


def resolve_resume(config: TrainingConfig) -> str | None:
    """The checkpoint `resume_from` names: a folder, the newest complete one for `"latest"`, or None."""
    if config.resume_from != "latest":
        return config.resume_from
    checkpoints = complete_checkpoints(config.output_dir)
    return checkpoints[-1] if checkpoints else None


def resume_step(accelerator: Accelerator, config: TrainingConfig) -> int:
    """Loads the checkpoint `resume_from` into the prepared run and returns its step; 0 without one."""
    folder = resolve_resume(config)
    if folder is None:
        return 0
    accelerator.load_state(folder)
    with open(os.path.join(folder, "training_state.json")) as file:
        return json.load(file)["step"]


def save_checkpoint(accelerator: Accelerator, config: TrainingConfig, step: int):
    """
    Saves the optimiser, model, EMA, scheduler and RNG states to `output_dir/checkpoint-{step}`: into a `.partial`
    folder first, renamed once complete, so that a run killed while saving leaves the last checkpoint the newest
    complete one. With `checkpoints_total_limit` the oldest checkpoints are deleted first.
    """
    folder = os.path.join(config.output_dir, f"checkpoint-{step}")
    partial = folder + PARTIAL_SUFFIX
    if accelerator.is_main_process:
        if config.checkpoints_total_limit is not None:
            existing = complete_checkpoints(config.output_dir)
            excess = len(existing) - (config.checkpoints_total_limit - 1)
            for old in existing[: max(excess, 0)]:
                shutil.rmtree(old)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(partial, "training_state.json"), "w") as file:
            json.dump({"step": step}, file)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    accelerator.wait_for_everyone()
