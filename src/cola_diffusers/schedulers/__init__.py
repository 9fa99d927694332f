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

"""The block-causal flow-matching scheduler, and the diffusers schedulers that swap in for it, by name."""

import importlib


# The multistep solvers integrate the flow when told its sigmas and its velocity prediction.
FLOW_SOLVER = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
# name: (module, class, config overrides); the classes are imported when a scheduler is built.
SCHEDULERS = {
    "block-causal": (f"{__name__}.scheduling_flow_match_block_causal", "FlowMatchBlockCausalScheduler", {}),
    "euler": ("diffusers", "FlowMatchEulerDiscreteScheduler", {}),
    "heun": ("diffusers", "FlowMatchHeunDiscreteScheduler", {}),
    "unipc": ("diffusers", "UniPCMultistepScheduler", FLOW_SOLVER),
    "dpm++": ("diffusers", "DPMSolverMultistepScheduler", FLOW_SOLVER),
}


def scheduler_from_name(name: str, config):
    """The scheduler `name` (a key of `SCHEDULERS`) built from a scheduler `config`, as `from_config` does."""
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; the schedulers are {list(SCHEDULERS)}.")
    module, class_name, overrides = SCHEDULERS[name]
    return getattr(importlib.import_module(module), class_name).from_config(config, **overrides)
