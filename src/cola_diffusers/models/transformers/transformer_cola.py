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

"""The block-causal 1-D Diffusion Transformer prior of Cola-DLM."""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from ..attention_cola import ColaAttnProcessorMixin, ColaKVCache, ColaLayerCache, block_causal_mask, check_cache_inputs
from ..embeddings_cola import ColaRotaryEmbedding, ColaTimestepEmbedding, apply_rotary_emb


@dataclass
class ColaTransformer1DModelOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, sequence_length, out_channels)`):
            Predicted velocity `ε - x_0` at every position.
    """

    sample: torch.Tensor


class ColaModulationTable:
    """
    The AdaLN terms of a fixed set of timesteps (and of 0, the timestep of clean latents), computed in one batched
    pass by the first forward that is given the table. Passes at these timesteps then look their terms up instead of
    running the timestep embedding and the modulation linears, a third of the DiT's weights. A table belongs to one
    request (a sampler that runs the same timesteps block after block).

    `terms` is `(num_timesteps, 6 * num_layers + 2, hidden_size)`: per layer `(shift_msa, 1 + scale_msa, gate_msa,
    shift_mlp, 1 + scale_mlp, gate_mlp)`, then `(shift, 1 + scale)` of the output norm.
    """

    def __init__(self, timesteps: torch.Tensor):
        # The embedding sees timesteps rounded to bfloat16: equal roundings share their terms.
        self.values = torch.cat([timesteps.flatten(), timesteps.new_zeros(1)]).to(torch.bfloat16).unique()
        self.terms: torch.Tensor | None = None


class ColaDiTAttnProcessor(ColaAttnProcessorMixin):
    """
    Processor of [`ColaDiTAttention`]: q/k/v projection, per-head q/k LayerNorm, partial interleaved RoPE and
    attention through diffusers' dispatcher, over the layer's key/value cache when there is one.
    """

    def __call__(
        self,
        attn: "ColaDiTAttention",
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, ...] | None = None,
        layer_cache: ColaLayerCache | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        # `hidden_states` is `(batch_size, sequence_length, dim)` or its tokens as rows, `(N, dim)`.
        rows_shape = hidden_states.shape[:-1]
        sequence_length = rotary_emb[0].shape[1]
        qkv = attn.to_qkv(hidden_states).view(-1, sequence_length, 3, attn.heads, attn.head_dim)
        query, key, value = qkv.unbind(2)
        # Queries and keys rotate as one tensor: one RoPE application instead of two.
        query_key = torch.stack([attn.norm_q(query), attn.norm_k(key)])
        query, key = apply_rotary_emb(query_key, rotary_emb).unbind(0)
        hidden_states = self.attend(query, key, value, attention_mask, layer_cache, cache_position)
        return attn.to_out(hidden_states.reshape(*rows_shape, -1))


class ColaDiTAttention(nn.Module, AttentionModuleMixin):
    """Multi-head self-attention with per-head affine LayerNorm on queries and keys and partial interleaved RoPE."""

    _default_processor_cls = ColaDiTAttnProcessor
    _available_processors = [ColaDiTAttnProcessor]

    def __init__(self, dim: int, num_heads: int, head_dim: int, qkv_bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.heads = num_heads
        self.head_dim = head_dim
        self.to_qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.norm_q = nn.LayerNorm(head_dim, eps=eps)
        self.norm_k = nn.LayerNorm(head_dim, eps=eps)
        self.to_out = nn.Linear(num_heads * head_dim, dim, bias=qkv_bias)
        self.set_processor(ColaDiTAttnProcessor())

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, ...] | None = None,
        layer_cache: ColaLayerCache | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        return self.processor(self, hidden_states, attention_mask, rotary_emb, layer_cache, cache_position)


class ColaFeedForward(nn.Module):
    """Two-layer MLP with tanh-approximated GELU."""

    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.proj_in = nn.Linear(dim, inner_dim)
        self.proj_out = nn.Linear(inner_dim, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj_out(F.gelu(self.proj_in(hidden_states), approximate="tanh"))


class ColaTransformerBlock(nn.Module):
    """
    DiT block: AdaLN-modulated attention and MLP, each followed by a gated residual.

    `shift, scale = Linear(SiLU(temb)).chunk(2)` modulates a non-affine LayerNorm as `norm(x) * (1 + scale) + shift`;
    the gate is `Linear(SiLU(temb))`, applied as `x + gate * h`. The block takes these terms precomputed (see
    [`ColaModulationTable`]), with `1 + scale` in place of `scale`.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm1_modulation = nn.Linear(dim, 2 * dim)
        self.attn = ColaDiTAttention(dim, num_heads, head_dim, qkv_bias=qkv_bias, eps=eps)
        self.attn_gate = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm2_modulation = nn.Linear(dim, 2 * dim)
        self.ff = ColaFeedForward(dim, int(dim * mlp_ratio))
        self.ff_gate = nn.Linear(dim, dim)

    def adaln_terms(self, temb: torch.Tensor) -> list[torch.Tensor]:
        """`[shift_msa, 1 + scale_msa, gate_msa, shift_mlp, 1 + scale_mlp, gate_mlp]` of a timestep embedding."""
        temb = F.silu(temb)
        shift_msa, scale_msa = self.norm1_modulation(temb).chunk(2, dim=-1)
        shift_mlp, scale_mlp = self.norm2_modulation(temb).chunk(2, dim=-1)
        return [shift_msa, 1 + scale_msa, self.attn_gate(temb), shift_mlp, 1 + scale_mlp, self.ff_gate(temb)]

    def forward(
        self,
        hidden_states: torch.Tensor,
        adaln_terms: tuple[torch.Tensor, ...],
        rotary_emb: tuple[torch.Tensor, ...],
        attention_mask: torch.Tensor | None = None,
        layer_cache: ColaLayerCache | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        shift_msa, one_plus_scale_msa, gate_msa, shift_mlp, one_plus_scale_mlp, gate_mlp = adaln_terms

        norm_hidden_states = torch.addcmul(shift_msa, self.norm1(hidden_states), one_plus_scale_msa)
        attn_output = self.attn(norm_hidden_states, attention_mask, rotary_emb, layer_cache, cache_position)
        hidden_states = torch.addcmul(hidden_states, gate_msa, attn_output)

        norm_hidden_states = torch.addcmul(shift_mlp, self.norm2(hidden_states), one_plus_scale_mlp)
        ff_output = self.ff(norm_hidden_states)
        return torch.addcmul(hidden_states, gate_mlp, ff_output)


class ColaTransformer1DModel(ModelMixin, ConfigMixin):
    """
    The block-causal Diffusion Transformer prior of Cola-DLM: predicts the flow-matching velocity of text latents.

    Attention is bidirectional inside a block of `block_size` latents and causal across blocks. For generation, a
    [`ColaKVCache`] keeps the keys and values of the prompt and of committed blocks.

    Args:
        in_channels (`int`, defaults to 16): Latent channels.
        out_channels (`int`, *optional*): Output channels; defaults to `in_channels`.
        num_layers (`int`, defaults to 24): Number of DiT blocks.
        num_attention_heads (`int`, defaults to 16): Attention heads.
        attention_head_dim (`int`, defaults to 128): Channels per head.
        hidden_size (`int`, *optional*): Width of the residual stream; defaults to heads × head dim.
        rope_dim (`int`, defaults to 96): Leading channels of each head that RoPE rotates.
        rope_theta (`float`, defaults to 10000.0): RoPE base.
        mlp_ratio (`float`, defaults to 2.0): MLP width over `hidden_size`.
        qkv_bias (`bool`, defaults to `False`): Bias of the query/key/value and attention output projections.
        norm_eps (`float`, defaults to 1e-5): LayerNorm epsilon.
        block_size (`int`, defaults to 16): Latents per block in training, the default block length of sampling.
        timestep_frequency_dim (`int`, defaults to 256): Sinusoidal features of the timestep.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ColaTransformerBlock"]
    _repeated_blocks = ["ColaTransformerBlock"]
    _skip_layerwise_casting_patterns = ["timestep_embedder", "rotary_embedder", "norm"]
    _keep_in_fp32_modules = ["rotary_embedder"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,
        out_channels: int | None = None,
        num_layers: int = 24,
        num_attention_heads: int = 16,
        attention_head_dim: int = 128,
        hidden_size: int | None = None,
        rope_dim: int = 96,
        rope_theta: float = 10000.0,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = False,
        norm_eps: float = 1e-5,
        block_size: int = 16,
        timestep_frequency_dim: int = 256,
    ):
        super().__init__()
        if rope_dim % 2 or not 0 < rope_dim <= attention_head_dim:
            raise ValueError(
                f"`rope_dim` must be even and in (0, attention_head_dim={attention_head_dim}], got {rope_dim}."
            )
        if block_size < 1:
            raise ValueError(f"`block_size` must be >= 1, got {block_size}.")
        out_channels = out_channels or in_channels
        hidden_size = hidden_size or num_attention_heads * attention_head_dim

        self.timestep_embedder = ColaTimestepEmbedding(hidden_size, timestep_frequency_dim)
        self.rotary_embedder = ColaRotaryEmbedding(rope_dim, attention_head_dim, rope_theta)
        self.proj_in = nn.Linear(in_channels, hidden_size)
        self.transformer_blocks = nn.ModuleList(
            [
                ColaTransformerBlock(
                    hidden_size, num_attention_heads, attention_head_dim, mlp_ratio, qkv_bias, norm_eps
                )
                for _ in range(num_layers)
            ]
        )
        self.norm_out = nn.LayerNorm(hidden_size, eps=norm_eps)
        self.norm_out_modulation = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj_out = nn.Linear(hidden_size, out_channels)
        self.gradient_checkpointing = False

    def make_kv_cache(self, batch_size: int, max_length: int) -> ColaKVCache:
        """Allocates a [`ColaKVCache`] of `max_length` positions for `batch_size` rows, on the model's device."""
        return ColaKVCache(
            len(self.transformer_blocks),
            batch_size,
            max_length,
            self.config.num_attention_heads,
            self.config.attention_head_dim,
            dtype=self.dtype,
            device=self.device,
        )

    def _adaln_terms(self, timestep: torch.Tensor) -> torch.Tensor:
        """
        The AdaLN terms of `timestep` (any shape), stacked as in [`ColaModulationTable`]: `timestep.shape +
        (6 * num_layers + 2, hidden_size)`. Timesteps are rounded to bfloat16 before the embedding, as in training.
        """
        temb = self.timestep_embedder(timestep.to(torch.bfloat16))
        num_layers = len(self.transformer_blocks)
        # Written layer by layer, so that no more than one layer's terms exist twice.
        terms = temb.new_empty(*temb.shape[:-1], 6 * num_layers + 2, temb.shape[-1])
        for index, block in enumerate(self.transformer_blocks):
            terms[..., 6 * index : 6 * index + 6, :] = torch.stack(block.adaln_terms(temb), dim=-2)
        shift, scale = self.norm_out_modulation(F.silu(temb)).chunk(2, dim=-1)
        terms[..., -2:, :] = torch.stack([shift, 1 + scale], dim=-2)
        return terms

    @torch.compiler.disable
    def _build_modulation(self, modulation: ColaModulationTable, device: torch.device):
        """
        Computes the terms of a table: inside a forward pass, where offloading hooks have put the weights on the
        execution device, and outside `torch.compile`, which then traces only lookups.
        """
        modulation.values = modulation.values.to(device)
        modulation.terms = self._adaln_terms(modulation.values)

    def _timestep_terms(self, timestep: torch.Tensor, modulation: ColaModulationTable | None) -> torch.Tensor:
        """The stacked AdaLN terms of `timestep`, looked up in `modulation` where one is given."""
        if modulation is None:
            return self._adaln_terms(timestep)
        if modulation.terms is None:
            self._build_modulation(modulation, timestep.device)
        found, index = (timestep.to(torch.bfloat16)[..., None] == modulation.values).max(-1)
        if not torch.compiler.is_compiling():
            # Checked on the device: a timestep missing from the table fails without a host synchronisation.
            found = found if found.numel() == 1 else found.all()
            torch._assert_async(found, "`timestep` holds a value that is not among the timesteps of `modulation`.")
        return modulation.terms[index]

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        position_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: ColaKVCache | None = None,
        cache_position: torch.LongTensor | None = None,
        modulation: ColaModulationTable | None = None,
        rotary_emb: tuple[torch.Tensor, ...] | None = None,
        return_dict: bool = True,
    ) -> ColaTransformer1DModelOutput | tuple:
        """
        Predicts the velocity of a batch of (partly) noisy latents.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, in_channels)`):
                Latents in the DiT's normalised space.
            timestep (`torch.Tensor` of shape `(1,)`, `(batch_size,)` or `(batch_size, sequence_length)`):
                Timesteps in `[0, 1000]`: one for the whole batch, one per sample or one per position. They are
                rounded to bfloat16 before the embedding, as the model was trained. The AdaLN modulation is
                computed once per timestep, so the fewer the cheaper (see `modulation`).
            position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                RoPE positions; default `0, 1, ...`.
            attention_mask (`torch.Tensor`, *optional*):
                Boolean, True where a query may attend to a key (see [`block_causal_mask`]), or additive in the
                model's dtype (see [`additive_mask`], cheaper when one mask serves many passes). Without a cache the
                keys are the positions of `hidden_states`, `(batch_size, 1, sequence_length, sequence_length)`;
                default: block-causal attention from `position_ids`. With a cache the keys are all cache slots,
                `(batch_size, 1, sequence_length, kv_cache.max_length)`.
            kv_cache ([`ColaKVCache`], *optional*):
                Cache to write this pass's keys/values into and to attend over.
            cache_position (`torch.LongTensor` of shape `(sequence_length,)`, *optional*):
                Cache slots written by this pass; required with `kv_cache`.
            modulation ([`ColaModulationTable`], *optional*):
                The AdaLN terms of the timesteps of this pass, computed once per request instead of once per pass.
                A timestep missing from the table fails on the device (a `RuntimeError`, or a device-side assert on
                CUDA), without synchronising with the host.
            rotary_emb (`tuple[torch.Tensor, ...]`, *optional*):
                The RoPE tables of `position_ids`, `transformer.rotary_embedder(position_ids)`, to compute them once
                for every pass at the same positions; default computed from `position_ids`.
            return_dict (`bool`, defaults to `True`): Return a [`ColaTransformer1DModelOutput`] instead of a tuple.

        Returns:
            [`ColaTransformer1DModelOutput`] or `tuple`: the predicted velocity.
        """
        batch_size, sequence_length, in_channels = hidden_states.shape
        if in_channels != self.config.in_channels:
            raise ValueError(
                f"`hidden_states` must have {self.config.in_channels} channels (last dim), got shape "
                f"{tuple(hidden_states.shape)}."
            )
        # One timestep per sample or for the batch is embedded and modulated once, broadcast over positions.
        timestep = timestep[:, None] if timestep.ndim == 1 else timestep
        if timestep.shape not in ((1, 1), (batch_size, 1), (batch_size, sequence_length)):
            raise ValueError(
                f"`timestep` must have shape (1,), ({batch_size},) or ({batch_size}, {sequence_length}), got "
                f"{tuple(timestep.shape)}."
            )
        check_cache_inputs(batch_size, kv_cache, attention_mask, cache_position)
        if position_ids is None:
            position_ids = torch.arange(sequence_length, device=hidden_states.device).expand(batch_size, -1)
        if attention_mask is None:
            key_valid = torch.ones_like(position_ids, dtype=torch.bool)
            attention_mask = block_causal_mask(position_ids, position_ids, key_valid, self.config.block_size)
        if rotary_emb is None:
            rotary_emb = self.rotary_embedder(position_ids)

        adaln_terms = self._timestep_terms(timestep, modulation)
        # Tokens become the rows of a 2-D stream (one matmul per linear) unless each sample has its own terms.
        if timestep.shape[1] == sequence_length or timestep.shape[0] == 1:
            hidden_states, adaln_terms = hidden_states.flatten(0, 1), adaln_terms.flatten(0, 1)
        adaln_terms = adaln_terms.unbind(-2)
        hidden_states = self.proj_in(hidden_states)

        for layer_idx, block in enumerate(self.transformer_blocks):
            block_terms = adaln_terms[6 * layer_idx : 6 * layer_idx + 6]
            layer_cache = None if kv_cache is None else kv_cache.layer(layer_idx)
            block_args = (hidden_states, block_terms, rotary_emb, attention_mask, layer_cache, cache_position)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, *block_args)
            else:
                hidden_states = block(*block_args)

        shift, one_plus_scale = adaln_terms[-2:]
        hidden_states = torch.addcmul(shift, self.norm_out(hidden_states), one_plus_scale)
        output = self.proj_out(hidden_states).view(batch_size, sequence_length, -1)

        if not return_dict:
            return (output,)
        return ColaTransformer1DModelOutput(sample=output)
