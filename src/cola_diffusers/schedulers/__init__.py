"""The block-causal flow-matching scheduler, and the diffusers schedulers that swap in for it, by name."""

from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler


# The multistep solvers integrate the flow when told its sigmas and its velocity prediction.
FLOW_SOLVER = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
SCHEDULERS = {
    "block-causal": (FlowMatchBlockCausalScheduler, {}),
    "euler": (FlowMatchEulerDiscreteScheduler, {}),
    "heun": (FlowMatchHeunDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, FLOW_SOLVER),
    "dpm++": (DPMSolverMultistepScheduler, FLOW_SOLVER),
}


def scheduler_from_name(name: str, config) -> SchedulerMixin:
    """The scheduler `name` (a key of `SCHEDULERS`) built from a scheduler `config`, as `from_config` does."""
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; the schedulers are {list(SCHEDULERS)}.")
    scheduler_class, overrides = SCHEDULERS[name]
    return scheduler_class.from_config(config, **overrides)
