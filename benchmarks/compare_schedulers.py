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
Schedulers and step counts against a 64-step Euler reference, on the reference fixture model.

    python benchmarks/compare_schedulers.py

Every run starts from the same noise with the same prompts (greedy, guidance 3). The errors are relative L2
distances to the 64-step Euler run, over the first block (the ODE solver's error alone) and over all blocks (where
later blocks also inherit the differences of their context); NFE counts DiT evaluations per block (a guided
evaluation is one batched pass). Prints a Markdown table.
"""

import os

import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from cola_diffusers import ColaDLMPipeline, FlowMatchBlockCausalScheduler
from cola_diffusers.schedulers import FLOW_SOLVER


FIXTURE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "cola_reference"
)
PROMPTS = ["Question: What is the capital of France? Answer:", "a long day of work and play at home", "river mountain"]
SCHEDULERS = {
    "FlowMatchBlockCausal (Euler, default)": (FlowMatchBlockCausalScheduler, {}),
    "FlowMatchBlockCausal shift=3": (FlowMatchBlockCausalScheduler, {"shift": 3.0}),
    "FlowMatchHeunDiscrete": (FlowMatchHeunDiscreteScheduler, {}),
    "UniPCMultistep (flow)": (UniPCMultistepScheduler, FLOW_SOLVER),
    "DPMSolverMultistep (flow)": (DPMSolverMultistepScheduler, FLOW_SOLVER),
    "FlowMatchEulerDiscrete": (FlowMatchEulerDiscreteScheduler, {}),
}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def main():
    pipe = ColaDLMPipeline.from_pretrained(FIXTURE_DIR)
    pipe.set_progress_bar_config(disable=True)
    default_config = pipe.scheduler.config
    noise = torch.randn(len(PROMPTS), 24, 8, generator=torch.Generator().manual_seed(0))
    kwargs = {
        "gen_length": 22,
        "guidance_scale": 3.0,
        "eos_early_stop": False,
        "output_type": "latent",
        "latents": noise,
    }
    reference = pipe(PROMPTS, num_inference_steps=64, **kwargs)

    block = pipe.transformer.config.block_size
    print("| scheduler | steps | NFE / block | error, first block | error, all blocks | tokens equal to reference |")
    print("|---|---|---|---|---|---|")
    for name, (scheduler_class, config) in SCHEDULERS.items():
        pipe.scheduler = scheduler_class.from_config(default_config, **config)
        for steps in (4, 8, 16, 32):
            output = pipe(PROMPTS, num_inference_steps=steps, **kwargs)
            first_block_error = relative_error(output.latents[:, :block], reference.latents[:, :block])
            error = relative_error(output.latents, reference.latents)
            agreement = (output.sequences == reference.sequences).float().mean().item()
            nfe = pipe.num_timesteps // (output.latents.shape[1] // block)
            print(f"| {name} | {steps} | {nfe} | {first_block_error:.2e} | {error:.2e} | {agreement:.0%} |")


if __name__ == "__main__":
    main()
