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
The settings of a benchmark run and the `run_config.json` that records them: checked before the model loads, so they
need no torch.
"""

import json
import os
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from ..generation.inputs import DEFAULTS


if TYPE_CHECKING:
    from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline


# The official benchmark's noise seed (`COLA_INFER_PER_SAMPLE_NOISE_SEED` in `scripts/run_benchmark.sh`).
OFFICIAL_SEED = 66
RUN_CONFIG = "run_config.json"


@dataclass(frozen=True)
class EvalSettings:
    """
    What a benchmark run generates with; the defaults are the official benchmark's (`scripts/run_benchmark.sh`).

    Args:
        model (`str`): The checkpoint, recorded so that runs of different models are not mixed.
        gen_length (`int`): New tokens per record.
        num_inference_steps (`int`, *optional*), guidance_scale (`float`, *optional*): Steps per block and
            guidance; None for the checkpoint's defaults (see [`~EvalSettings.resolved`]).
        scheduler (`str`): A name of `cola_diffusers.schedulers.SCHEDULERS`.
        temperature (`float`): 0 is greedy.
        seeds (`tuple[int, ...]`): The noise seeds; each record is generated once per seed.
        dtype (`str`): The weights' dtype.
    """

    model: str
    gen_length: int = DEFAULTS.gen_length
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    scheduler: str = "block-causal"
    temperature: float = DEFAULTS.temperature
    seeds: tuple[int, ...] = (OFFICIAL_SEED,)
    dtype: str = "float32"

    def resolved(self, pipe: "ColaDLMPipeline") -> "EvalSettings":
        """These settings with the steps and guidance `pipe` generates with where they are None."""
        defaults = pipe.checkpoint_defaults
        num_inference_steps, guidance_scale = defaults.steps_and_guidance(
            self.num_inference_steps, self.guidance_scale
        )
        return replace(self, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)


def check_run_config(output_dir: str, settings: EvalSettings, resume: bool):
    """
    Refuses a folder that holds another run's results, unless `resume` and the same settings (seeds may be added);
    settings left to the checkpoint (None) are compared once resolved. `resume` needs a run to continue.
    """
    path = os.path.join(output_dir, RUN_CONFIG)
    if resume and not os.path.isfile(path):
        raise ValueError(f"--resume: {output_dir} holds no run to continue (no {RUN_CONFIG}); leave out --resume.")
    if not os.path.isdir(output_dir):
        return
    holds_results = any(name.endswith(".jsonl") for name in os.listdir(output_dir))
    if not os.path.isfile(path):
        if holds_results:
            raise ValueError(
                f"{output_dir} holds results without a {RUN_CONFIG}: they are not from `cola-diffusers eval run`, "
                "and are not mixed with new ones; choose another --output folder."
            )
        return
    if not resume:
        raise ValueError(
            f"{output_dir} already holds a run; pass --resume to continue it, or choose another --output folder."
        )
    with open(path, encoding="utf-8") as file:
        recorded = json.load(file)
    current = settings_record(settings)
    changed = sorted(key for key in current if current[key] is not None and recorded.get(key) != current[key])
    if "seeds" in changed and set(recorded.get("seeds", ())) <= set(current["seeds"]):
        changed.remove("seeds")  # more seeds: the run generates the new ones only
    if changed:
        details = ", ".join(f"{key}: {recorded.get(key)!r} there, {current[key]!r} now" for key in changed)
        raise ValueError(f"{output_dir} holds a run with other settings ({details}); it cannot be resumed with these.")


def write_run_config(output_dir: str, settings: EvalSettings):
    """Records the settings of the run in `output_dir/run_config.json`."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RUN_CONFIG)
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        json.dump(settings_record(settings), file, indent=2)
    os.replace(path + ".tmp", path)


def settings_record(settings: EvalSettings) -> dict:
    """The settings as JSON stores them (tuples become lists)."""
    return json.loads(json.dumps(asdict(settings)))
