"""Block-causal attention with a preallocated key/value cache, shared by the Cola-DLM DiT and Text VAE."""

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn


class ColaKVCache:
    """
    Preallocated keys and values of every attention layer of one model, for one batch of requests.

    Slot `j` of row `b` holds the key/value of one token or latent. A forward pass with `kv_cache=cache` and
    `cache_offset=o` writes the keys and values of its `S` positions into slots `[o, o + S)` in place and attends
    over slots `[0, o + S)`; slots are never reallocated.

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

    def update(
        self, layer_idx: int, key: torch.Tensor, value: torch.Tensor, offset: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes `key`/`value` `(B, S, H, D)` at slots `[offset, offset + S)`; returns the slots `[0, offset + S)`."""
        end = offset + key.shape[1]
        if end > self.max_length:
            raise ValueError(f"The cache holds {self.max_length} positions; writing up to {end} does not fit.")
        self.keys[layer_idx, :, offset:end] = key
        self.values[layer_idx, :, offset:end] = value
        return self.keys[layer_idx, :, :end], self.values[layer_idx, :, :end]


def block_causal_mask(
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_valid: torch.Tensor,
    block_size: int,
) -> torch.Tensor:
    """
    Boolean attention mask of block-causal attention: bidirectional inside a block, causal across blocks.

    The keys end with the queries' own positions (a pass attends to the cache, then to itself). Every query also
    attends to its own key, so that padding queries never see an empty row.

    Args:
        query_positions (`torch.LongTensor` of shape `(B, S_q)`): Position of every query in its sequence.
        key_positions (`torch.LongTensor` of shape `(B, S_k)`): Position of every key, `S_k >= S_q`.
        key_valid (`torch.BoolTensor` of shape `(B, S_k)`): False for padding keys.
        block_size (`int`): Latents per block.

    Returns:
        `torch.BoolTensor` of shape `(B, 1, S_q, S_k)`, True where the query may attend to the key.
    """
    query_block = torch.div(query_positions, block_size, rounding_mode="floor")
    key_block = torch.div(key_positions, block_size, rounding_mode="floor")
    mask = key_valid[:, None, :] & (key_block[:, None, :] <= query_block[:, :, None])
    num_queries, num_keys = query_positions.shape[1], key_positions.shape[1]
    own_key = torch.arange(num_keys, device=mask.device) == (
        torch.arange(num_queries, device=mask.device)[:, None] + (num_keys - num_queries)
    )
    return (mask | own_key).unsqueeze(1)


class ColaAttnProcessor:
    """
    Runs attention through diffusers' attention dispatcher, optionally reading and writing a [`ColaKVCache`].

    Rows `[0, kv_cache.batch_size)` write their keys/values at `cache_offset` and attend to the cache; further rows
    (the unconditional branch of classifier-free guidance) attend to their own positions only, through the last
    `S` columns of the mask.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        kv_cache: ColaKVCache | None = None,
        layer_idx: int = 0,
        cache_offset: int = 0,
    ) -> torch.Tensor:
        """Attention of `(N, S, H, D)` queries; returns `(N, S, H, D)`."""
        if kv_cache is None:
            return self._attend(query, key, value, attention_mask)

        num_cached = kv_cache.batch_size
        cached_keys, cached_values = kv_cache.update(layer_idx, key[:num_cached], value[:num_cached], cache_offset)
        cached_mask = None if attention_mask is None else attention_mask[:num_cached]
        hidden_states = self._attend(query[:num_cached], cached_keys, cached_values, cached_mask)
        if query.shape[0] == num_cached:
            return hidden_states

        own_mask = None if attention_mask is None else attention_mask[num_cached:, ..., cache_offset:]
        uncached = self._attend(query[num_cached:], key[num_cached:], value[num_cached:], own_mask)
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
