"""Flow-matching Euler scheduler that integrates one block of latents at a time."""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput


@dataclass
class FlowMatchBlockCausalSchedulerOutput(BaseOutput):
    """
    Output of [`FlowMatchBlockCausalScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, block_length, latent_dim)`):
            The block after one Euler step, input of the next denoising step.
    """

    prev_sample: torch.Tensor


class FlowMatchBlockCausalScheduler(SchedulerMixin, ConfigMixin):
    """
    Euler integrator of the flow-matching ODE `dx/dσ = v` for the block-causal Cola-DLM prior.

    The noisy latent is `x_σ = (1 - σ) x_0 + σ ε` with `σ = t / num_train_timesteps`, and the model predicts the
    velocity `v = ε - x_0`. Every block of latents is integrated from `σ = 1` to `σ = 0` on its own: call
    `set_timesteps` once per block. The default configuration reproduces the official schedule
    `torch.linspace(1000, 0, num_inference_steps + 1)` exactly.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            Timestep that corresponds to pure noise (`σ = 1`).
        shift (`float`, defaults to 1.0):
            Timestep shift `σ' = shift σ / (1 + (shift - 1) σ)`. Values above 1 spend more steps at high noise.
    """

    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0):
        if num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be >= 1, got {num_train_timesteps}.")
        if shift <= 0:
            raise ValueError(f"`shift` must be > 0, got {shift}.")
        self.timesteps = None
        self.sigmas = None
        self.num_inference_steps = None
        self._step_index = None
        self._begin_index = None

    @property
    def step_index(self):
        """Index of the current timestep; advances by one with every `step`."""
        return self._step_index

    @property
    def begin_index(self):
        """Index of the first timestep, set by `set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        """Starts the next block at `timesteps[begin_index]` instead of the first timestep."""
        self._begin_index = begin_index

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
            schedule = torch.tensor([*map(float, sigmas), 0.0], dtype=torch.float32)
            if len(sigmas) < 1 or not bool((schedule[:-1] > 0).all() and (schedule[:-1] <= 1).all()):
                raise ValueError(f"`sigmas` must be non-empty and lie in (0, 1], got {list(sigmas)}.")
            if not bool((schedule[1:] < schedule[:-1]).all()):
                raise ValueError(f"`sigmas` must be strictly decreasing, got {list(sigmas)}.")
            timesteps_with_end = schedule * num_train_timesteps
        else:
            if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
                raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps}.")
            timesteps_with_end = torch.linspace(num_train_timesteps, 0, num_inference_steps + 1)
            shift = self.config.shift
            if shift != 1.0:
                sigma = timesteps_with_end / num_train_timesteps
                timesteps_with_end = shift * sigma / (1 + (shift - 1) * sigma) * num_train_timesteps

        self.num_inference_steps = len(timesteps_with_end) - 1
        self._timesteps_with_end = timesteps_with_end.to(device)
        self.timesteps = self._timesteps_with_end[:-1]
        self.sigmas = self._timesteps_with_end / num_train_timesteps
        self._step_index = None

    def scale_noise(self, sample: torch.Tensor, timestep: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process `x_σ = (1 - σ) x_0 + σ ε` for a timestep (broadcast against `sample`)."""
        sigma = timestep.to(sample.dtype) / self.config.num_train_timesteps
        return (1.0 - sigma) * sample + sigma * noise

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> FlowMatchBlockCausalSchedulerOutput | tuple:
        """
        One Euler step `x ← x - (t - t_next) / num_train_timesteps · v`.

        Args:
            model_output (`torch.Tensor`): Velocity predicted by the transformer (after guidance).
            timestep (`float` or `torch.Tensor`): The current timestep, an entry of `timesteps`.
            sample (`torch.Tensor`): The current block of latents.
            return_dict (`bool`, defaults to `True`): Return a dataclass instead of a tuple.

        Returns:
            [`FlowMatchBlockCausalSchedulerOutput`] or `tuple`: the block at the next timestep.
        """
        if self.timesteps is None:
            raise ValueError("Call `set_timesteps` before `step`.")
        if self._step_index is None:
            self._step_index = self._begin_index or 0
        if self._step_index >= self.num_inference_steps:
            raise ValueError(f"All {self.num_inference_steps} steps of this block were taken; call `set_timesteps`.")

        t = self._timesteps_with_end[self._step_index]
        t_next = self._timesteps_with_end[self._step_index + 1]
        delta = ((t - t_next) / self.config.num_train_timesteps).to(torch.float32)
        prev_sample = (sample.to(torch.float32) - delta * model_output.to(torch.float32)).to(sample.dtype)
        self._step_index += 1

        if not return_dict:
            return (prev_sample,)
        return FlowMatchBlockCausalSchedulerOutput(prev_sample=prev_sample)

    def __len__(self):
        return self.config.num_train_timesteps
