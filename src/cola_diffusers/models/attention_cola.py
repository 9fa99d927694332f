"""Block-causal attention with a preallocated key/value cache, shared by the Cola-DLM DiT and Text VAE."""

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
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ):
        shape = (num_layers, batch_size, max_length, num_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def max_length(self) -> int:
        return self.keys.shape[2]

    def layer(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `(keys, values)` buffers of one layer, each `(batch_size, max_length, num_heads, head_dim)`."""
        return self.keys[layer_idx], self.values[layer_idx]


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


class ColaAttnProcessor:
    """
    Runs attention through diffusers' attention dispatcher, optionally writing to and reading a layer's cache.

    With a cache, rows `[0, cache_batch_size)` write their keys/values at `cache_position` and attend over every
    cache slot through `attention_mask`; further rows (the unconditional branch of classifier-free guidance) attend
    bidirectionally to their own positions only.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        layer_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Attention of `(N, S, H, D)` queries; returns `(N, S, H, D)`."""
        if layer_cache is None:
            return self._attend(query, key, value, attention_mask)

        cached_keys, cached_values = layer_cache
        num_cached = cached_keys.shape[0]
        cached_keys.index_copy_(1, cache_position, key[:num_cached].to(cached_keys.dtype))
        cached_values.index_copy_(1, cache_position, value[:num_cached].to(cached_values.dtype))
        hidden_states = self._attend(query[:num_cached], cached_keys, cached_values, attention_mask)
        if query.shape[0] == num_cached:
            return hidden_states
        uncached = self._attend(query[num_cached:], key[num_cached:], value[num_cached:], None)
        return torch.cat([hidden_states, uncached])

    def _attend(self, query, key, value, attention_mask):
        return dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
