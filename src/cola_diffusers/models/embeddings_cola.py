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


def apply_rotary_emb(x: torch.Tensor, rotary_emb: tuple[torch.Tensor, torch.Tensor, torch.LongTensor]) -> torch.Tensor:
    """
    Rotates the channel pairs of `x` by RoPE tables `(cos, sin, partner)` in fp32: `x' = x cos + x[partner] sin`,
    where `partner` names the other channel of each pair and `sin` carries the sign of its term (see
    [`ColaRotaryEmbedding`] for interleaved pairs and [`ColaTextRotaryEmbedding`] for halves).
    """
    cos, sin, partner = rotary_emb
    x_float = x.float()
    return torch.addcmul(x_float * cos, x_float.index_select(-1, partner), sin).to(x.dtype)


class ColaRotaryEmbedding(nn.Module):
    """
    RoPE tables of interleaved pairs over the first `rope_dim` channels of a `head_dim`-channel head.

    The frequencies are a saved buffer because checkpoints carry them (possibly rounded to their storage dtype).
    They stay in fp32 when the model is cast: rounding them would move the angles of distant positions.
    """

    def __init__(self, rope_dim: int, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        inv_freq = 1.0 / theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim)
        self.register_buffer("inv_freq", inv_freq)
        # Pairs `(2i, 2i + 1)`: `x_2i' = x_2i cos - x_2i+1 sin`, `x_2i+1' = x_2i+1 cos + x_2i sin`.
        self.register_buffer("sin_sign", torch.tensor([-1.0, 1.0]).repeat(head_dim // 2), persistent=False)
        self.register_buffer("partner", torch.arange(head_dim) ^ 1, persistent=False)

    def _apply(self, fn, recurse=True):
        inv_freq, sin_sign = self.inv_freq, self.sin_sign
        super()._apply(fn, recurse)
        self.inv_freq = inv_freq.to(device=self.inv_freq.device)
        self.sin_sign = sin_sign.to(device=self.sin_sign.device)
        return self

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.LongTensor]:
        """
        `position_ids (B, S)` → the tables of [`apply_rotary_emb`]: fp32 `cos` and signed `sin` of shape `(B, S, 1,
        head_dim)`, each angle repeated over its channel pair (channels past `rope_dim` get `cos = 1`, `sin = 0`: no
        rotation), and every channel's partner.
        """
        inv_freq = self.inv_freq.to(position_ids.device)
        angles = position_ids.float()[..., None] * inv_freq
        angles = F.pad(angles, (0, self.head_dim // 2 - angles.shape[-1])).repeat_interleave(2, dim=-1)
        cos, sin = angles.cos().unsqueeze(-2), (angles.sin() * self.sin_sign.to(angles.device)).unsqueeze(-2)
        return cos, sin, self.partner.to(position_ids.device)


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


class ColaTextRotaryEmbedding(nn.Module):
    """RoPE tables of the half-rotation layout over the whole head: channel `i` pairs with `i + head_dim / 2`."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        # `x_i' = x_i cos - x_i+h sin` in the first half, `x_i+h' = x_i+h cos + x_i sin` in the second.
        half = head_dim // 2
        self.register_buffer("sin_sign", torch.tensor([-1.0] * half + [1.0] * half), persistent=False)
        self.register_buffer("partner", torch.arange(head_dim).roll(half), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.LongTensor]:
        """`position_ids (B, S)` → the tables of [`apply_rotary_emb`], `cos` and signed `sin` `(B, S, 1, head_dim)`."""
        angles = position_ids.float()[..., None] * self.inv_freq
        angles = torch.cat([angles, angles], dim=-1).unsqueeze(-2)
        return angles.cos(), angles.sin() * self.sin_sign, self.partner
