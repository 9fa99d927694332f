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

"""The position and timestep embeddings of the Cola-DLM DiT and Text VAE."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def apply_interleaved_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """
    Rotates the interleaved channel pairs `(0, 1), (2, 3), ...` of `x` by the complex RoPE table `freqs_cis` of
    [`ColaRotaryEmbedding`]: each pair is a complex number `x_2i + i x_2i+1` multiplied by `e^{i θ}`, in fp32.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * freqs_cis).flatten(-2).to(x.dtype)


class ColaRotaryEmbedding(nn.Module):
    """
    Complex RoPE table of interleaved pairs over the first `rope_dim` channels of a `head_dim`-channel head.

    The frequencies are a saved buffer because checkpoints carry them (possibly rounded to their storage dtype).
    They stay in fp32 when the model is cast: rounding them would move the angles of distant positions.
    """

    def __init__(self, rope_dim: int, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        inv_freq = 1.0 / theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim)
        self.register_buffer("inv_freq", inv_freq)

    def _apply(self, fn, recurse=True):
        inv_freq = self.inv_freq
        super()._apply(fn, recurse)
        self.inv_freq = inv_freq.to(device=self.inv_freq.device)
        return self

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """
        `position_ids (B, S)` → complex64 `e^{i θ}` of shape `(B, S, 1, head_dim // 2)`, one per channel pair;
        pairs past `rope_dim` get `1` (no rotation).
        """
        angles = position_ids.float()[..., None] * self.inv_freq
        angles = F.pad(angles, (0, self.head_dim // 2 - angles.shape[-1]))
        return torch.polar(torch.ones_like(angles), angles).unsqueeze(-2)


class ColaTimestepEmbedding(nn.Module):
    """Sinusoidal `[sin, cos]` features of the timestep followed by three linear layers with SiLU between them."""

    def __init__(self, embedding_dim: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        half_dim = frequency_dim // 2
        exponent = -math.log(max_period) * torch.arange(half_dim, dtype=torch.float32) / half_dim
        self.register_buffer("frequencies", exponent.exp(), persistent=False)
        self.linear_1 = nn.Linear(frequency_dim, embedding_dim)
        self.linear_2 = nn.Linear(embedding_dim, embedding_dim)
        self.linear_3 = nn.Linear(embedding_dim, embedding_dim)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        angles = timestep.float()[..., None] * self.frequencies
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).to(self.linear_1.weight.dtype)
        hidden_states = F.silu(self.linear_1(features))
        hidden_states = F.silu(self.linear_2(hidden_states))
        return self.linear_3(hidden_states)


def apply_half_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE that rotates the two halves of every head against each other, computed in fp32."""
    x_first, x_second = x.float().chunk(2, dim=-1)
    rotated_half = torch.cat([-x_second, x_first], dim=-1)
    return (x.float() * cos + rotated_half * sin).to(x.dtype)


class ColaTextRotaryEmbedding(nn.Module):
    """RoPE tables `(cos, sin)` of the half-rotation layout over the whole head."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`position_ids (B, S)` → `cos, sin` of shape `(B, S, 1, head_dim)`, fp32."""
        angles = position_ids.float()[..., None] * self.inv_freq
        angles = torch.cat([angles, angles], dim=-1).unsqueeze(-2)
        return angles.cos(), angles.sin()
