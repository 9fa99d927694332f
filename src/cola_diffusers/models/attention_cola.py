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

"""Block-causal attention with a preallocated key/value cache, shared by the Cola-DLM DiT and Text VAE."""

import copy
from dataclasses import dataclass

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn


class ColaKVCache:
    """
    Preallocated keys and values of every attention layer of one model, for one batch of requests.

    Slot `j` of row `b` holds the key/value of one token or latent. A forward pass with `kv_cache=cache` writes the
    keys/values of its positions into the slots `cache_position` in place and attends over all slots, with an
    attention mask that hides the slots not written yet. Shapes never change during a request, which keeps
    `torch.compile` from recompiling.

    Args:
        num_layers (`int`): Number of attention layers of the model.
        batch_size (`int`): Number of rows that own a cache.
        max_length (`int`): Number of slots per row.
        num_heads (`int`): Number of key/value heads.
        head_dim (`int`): Channels per head.
        dtype (`torch.dtype`), device (`torch.device`): Storage of the buffers.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        max_length: int,
        num_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ):
        shape = (num_layers, batch_size, max_length, num_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.layers = [ColaLayerCache(keys, values) for keys, values in zip(self.keys, self.values)]

    def layer(self, index: int) -> "ColaLayerCache":
        """
        One layer's keys and values: views made once, or, with autograd on, made now (autograd tracks in-place
        writes only into views made after the cache's last write).
        """
        if torch.is_grad_enabled():
            return ColaLayerCache(self.keys[index], self.values[index])
        return self.layers[index]

    def rows(self, count: int) -> "ColaKVCache":
        """The first `count` rows of this cache, sharing its storage."""
        cache = copy.copy(self)
        cache.keys, cache.values = self.keys[:, :count], self.values[:, :count]
        cache.layers = [ColaLayerCache(keys, values) for keys, values in zip(cache.keys, cache.values)]
        return cache

    def move_row(self, source: int, target: int):
        """Copies row `source`'s keys and values into row `target`."""
        self.keys[:, target] = self.keys[:, source]
        self.values[:, target] = self.values[:, source]

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def max_length(self) -> int:
        return self.keys.shape[2]


def block_causal_mask(
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_valid: torch.Tensor,
    block_size: int,
    query_key_index: torch.LongTensor | None = None,
) -> torch.Tensor:
    """
    Boolean attention mask of block-causal attention: bidirectional inside a block, causal across blocks.

    Every query also attends to its own key, so that padding queries never see an empty row.

    Args:
        query_positions (`torch.LongTensor` of shape `(B, S_q)`): Position of every query in its sequence.
        key_positions (`torch.LongTensor` of shape `(B, S_k)`): Position of every key.
        key_valid (`torch.BoolTensor` of shape `(B, S_k)`): False for padding keys and unwritten cache slots.
        block_size (`int`): Latents per block.
        query_key_index (`torch.LongTensor` of shape `(S_q,)`, *optional*): Index of every query's own key
            (its cache slot); default the last `S_q` keys.

    Returns:
        `torch.BoolTensor` of shape `(B, 1, S_q, S_k)`, True where the query may attend to the key.
    """
    query_block = torch.div(query_positions, block_size, rounding_mode="floor")
    key_block = torch.div(key_positions, block_size, rounding_mode="floor")
    mask = key_valid[:, None, :] & (key_block[:, None, :] <= query_block[:, :, None])
    num_queries, num_keys = query_positions.shape[1], key_positions.shape[1]
    if query_key_index is None:
        query_key_index = torch.arange(num_keys - num_queries, num_keys, device=mask.device)
    own_key = torch.arange(num_keys, device=mask.device) == query_key_index[:, None]
    return (mask | own_key).unsqueeze(1)


@dataclass
class ColaLayerCache:
    """One attention layer's keys and values in a [`ColaKVCache`], `(batch_size, max_length, num_heads, head_dim)`."""

    keys: torch.Tensor
    values: torch.Tensor


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """
    A boolean attention mask as an additive one in `dtype` (0 where attending, `-inf` elsewhere): what attention
    computes from a boolean mask on every call, done once for the passes that share the mask.
    """
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def cached_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer_cache: ColaLayerCache | None = None,
    cache_position: torch.LongTensor | None = None,
    **dispatch_kwargs,
) -> torch.Tensor:
    """
    Attention of `(N, S, H, D)` queries through diffusers' attention dispatcher (`dispatch_kwargs`: `backend`,
    `parallel_config`), over `key`/`value` or, with `layer_cache`, over the cache after writing `key`/`value` into
    its slots `cache_position`; returns `(N, S, H, D)`.
    """
    if layer_cache is not None:
        layer_cache.keys.index_copy_(1, cache_position, key.to(layer_cache.keys.dtype))
        layer_cache.values.index_copy_(1, cache_position, value.to(layer_cache.values.dtype))
        key, value = layer_cache.keys, layer_cache.values
    return dispatch_attention_fn(query, key, value, attn_mask=attention_mask, **dispatch_kwargs)


class ColaAttnProcessorMixin:
    """
    What the attention processors of the Cola-DLM models share: the backend and parallel config that diffusers'
    `set_attention_backend` sets, and attention through [`cached_attention`] with them.
    """

    _attention_backend = None
    _parallel_config = None

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        layer_cache: ColaLayerCache | None,
        cache_position: torch.LongTensor | None,
    ) -> torch.Tensor:
        return cached_attention(
            query,
            key,
            value,
            attention_mask,
            layer_cache,
            cache_position,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )


def check_cache_inputs(
    batch_size: int,
    kv_cache: ColaKVCache | None,
    attention_mask: torch.Tensor | None,
    cache_position: torch.LongTensor | None,
):
    """Raises a `ValueError` for cache arguments of a forward pass that do not fit together."""
    if kv_cache is None:
        return
    if attention_mask is None or cache_position is None:
        raise ValueError("`attention_mask` and `cache_position` are required with `kv_cache`.")
    if batch_size != kv_cache.batch_size:
        raise ValueError(f"A batch of {batch_size} rows does not fit a cache of {kv_cache.batch_size} rows.")
