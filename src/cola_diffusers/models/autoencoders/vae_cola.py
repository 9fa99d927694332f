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

"""The posterior and the outputs of the Cola-DLM Text VAE."""

import math
from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


LOGVAR_RANGE = (-30.0, 20.0)


class ColaTextLatentDistribution:
    """
    Diagonal Gaussian posterior `q(z | x)` over text latents of shape `(batch_size, num_latents, latent_dim)`.

    Args:
        mean (`torch.Tensor`): Posterior mean.
        logvar (`torch.Tensor`): Posterior log-variance, clamped to `[-30, 20]`.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """Draws `mean + std · ε`."""
        noise = randn_tensor(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        """The posterior mean, used for prompts at inference."""
        return self.mean

    def kl(self, other: "ColaTextLatentDistribution | None" = None) -> torch.Tensor:
        """
        `KL(q || N(0, I))`, or `KL(q || other)`, summed over the latent channels, shape `(batch_size, num_latents)`.
        """
        if other is None:
            return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=-1)
        variance_ratio = (self.logvar - other.logvar).exp()
        squared_distance = (self.mean - other.mean).pow(2) / other.logvar.exp()
        return 0.5 * (squared_distance + variance_ratio - 1.0 - self.logvar + other.logvar).sum(dim=-1)

    def negative_entropy(self) -> torch.Tensor:
        """`E_q[log q]` summed over the latent channels, shape `(batch_size, num_latents)`."""
        return -0.5 * (1.0 + math.log(2 * math.pi) + self.logvar).sum(dim=-1)


@dataclass
class ColaTextEncoderOutput(BaseOutput):
    """
    Args:
        latent_dist ([`ColaTextLatentDistribution`]): Posterior over the latents, one per `patch_size` tokens.
    """

    latent_dist: ColaTextLatentDistribution


@dataclass
class ColaTextDecoderOutput(BaseOutput):
    """
    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_latents * patch_size, vocab_size)`): Token logits.
    """

    logits: torch.Tensor
