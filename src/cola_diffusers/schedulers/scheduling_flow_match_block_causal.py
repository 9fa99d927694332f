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

"""The flow-matching Euler scheduler of Cola-DLM's block-causal prior."""

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
    FlowMatchEulerDiscreteSchedulerOutput,
)

# diffusers loads a component saved from outside diffusers through the base classes its module exposes.
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401


class FlowMatchBlockCausalScheduler(FlowMatchEulerDiscreteScheduler):
    """
    Euler integrator of the flow-matching ODE `dx/dσ = v` for the block-causal Cola-DLM prior: a
    [`FlowMatchEulerDiscreteScheduler`] with the official schedule and update.

    The noisy latent is `x_σ = (1 - σ) x_0 + σ ε` with `σ = t / num_train_timesteps`, and the model predicts the
    velocity `v = ε - x_0`. What is block-causal: the prior generates one block of latents at a time, conditioned on
    the clean blocks before it, so every block is integrated from `σ = 1` to `σ = 0` on its own; the pipeline calls
    `set_timesteps` once per block, which restarts the step index.

    Two things differ from the parent, to match the official sampler exactly: the default schedule is
    `torch.linspace(1000, 0, num_inference_steps + 1)` (the parent's ends at `σ = 1 / num_train_timesteps`), and
    `step` is the official fp32 update `x - (t - t_next) / num_train_timesteps · v`. The forward process
    (`scale_noise`), the step and begin indices and `__len__` are the parent's.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            Timestep that corresponds to pure noise (`σ = 1`).
        shift (`float`, defaults to 1.0):
            Timestep shift `σ' = shift σ / (1 + (shift - 1) σ)`. Values above 1 spend more steps at high noise.
    """

    # The parent's settings, which the saved config lists too, load silently as those of a compatible scheduler.
    _compatibles = [FlowMatchEulerDiscreteScheduler.__name__]

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0):
        if num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be >= 1, got {num_train_timesteps}.")
        if shift <= 0:
            raise ValueError(f"`shift` must be > 0, got {shift}.")
        super().__init__(num_train_timesteps=num_train_timesteps, shift=shift)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        timesteps: list[float] | None = None,
    ):
        """
        Sets the schedule of the next block.

        Args:
            num_inference_steps (`int`, *optional*):
                Number of Euler steps; the sigmas are `linspace(1, 0, num_inference_steps + 1)` before the shift.
            device (`str` or `torch.device`, *optional*):
                Device of `timesteps` and `sigmas`.
            sigmas (`list[float]`, *optional*):
                Custom decreasing sigmas in `(0, 1]`, one per step; the final `σ = 0` is appended. No shift applied.
            timesteps (`list[float]`, *optional*):
                Custom decreasing timesteps in `(0, num_train_timesteps]`, one per step. No shift applied.
        """
        num_train_timesteps = self.config.num_train_timesteps
        if sum(arg is not None for arg in (num_inference_steps, sigmas, timesteps)) != 1:
            raise ValueError("Pass exactly one of `num_inference_steps`, `sigmas` or `timesteps`.")
        if timesteps is not None:
            sigmas = [float(t) / num_train_timesteps for t in timesteps]
        if sigmas is not None:
            timesteps_with_end = self._custom_schedule(sigmas) * num_train_timesteps
        else:
            if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
                raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps}.")
            timesteps_with_end = torch.linspace(num_train_timesteps, 0, num_inference_steps + 1)
            shift = self.config.shift
            if shift != 1.0:
                sigma = timesteps_with_end / num_train_timesteps
                timesteps_with_end = shift * sigma / (1 + (shift - 1) * sigma) * num_train_timesteps

        self.num_inference_steps = len(timesteps_with_end) - 1
        # The step sizes `(t - t_next) / num_train_timesteps` in fp32, read on the host before the schedule moves to
        # `device`: a step then multiplies by a number, without indexing a tensor or synchronising.
        timesteps_with_end = timesteps_with_end.to(torch.float32)
        self._step_sizes = ((timesteps_with_end[:-1] - timesteps_with_end[1:]) / num_train_timesteps).tolist()
        self._timesteps_with_end = timesteps_with_end.to(device)
        self.timesteps = self._timesteps_with_end[:-1]
        self.sigmas = self._timesteps_with_end / num_train_timesteps
        self._step_index = None
        self._begin_index = None

    @staticmethod
    def _custom_schedule(sigmas: list[float]) -> torch.Tensor:
        """`sigmas` with the final `σ = 0`, checked to be non-empty, in `(0, 1]` and strictly decreasing."""
        schedule = torch.tensor([*map(float, sigmas), 0.0], dtype=torch.float32)
        if len(sigmas) < 1 or not bool((schedule[:-1] > 0).all() and (schedule[:-1] <= 1).all()):
            raise ValueError(f"`sigmas` must be non-empty and lie in (0, 1], got {list(sigmas)}.")
        if not bool((schedule[1:] < schedule[:-1]).all()):
            raise ValueError(f"`sigmas` must be strictly decreasing, got {list(sigmas)}.")
        return schedule

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> FlowMatchEulerDiscreteSchedulerOutput | tuple:
        """
        One Euler step `x ← x - (t - t_next) / num_train_timesteps · v`, in fp32 as the official sampler.

        Args:
            model_output (`torch.Tensor`): Velocity predicted by the transformer (after guidance).
            timestep (`float` or `torch.Tensor`): The current timestep, an entry of `timesteps`.
            sample (`torch.Tensor`): The current block of latents.
            return_dict (`bool`, defaults to `True`): Return a dataclass instead of a tuple.

        Returns:
            [`~schedulers.scheduling_flow_match_euler_discrete.FlowMatchEulerDiscreteSchedulerOutput`] or `tuple`:
            the block at the next timestep.
        """
        if self.num_inference_steps is None:
            raise ValueError("Call `set_timesteps` before `step`.")
        if self.step_index is None:
            self._init_step_index(timestep)
        if self.step_index >= self.num_inference_steps:
            raise ValueError(f"All {self.num_inference_steps} steps of this block were taken; call `set_timesteps`.")

        delta = self._step_sizes[self.step_index]
        prev_sample = (sample.to(torch.float32) - delta * model_output.to(torch.float32)).to(sample.dtype)
        self._step_index += 1

        if not return_dict:
            return (prev_sample,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev_sample)
