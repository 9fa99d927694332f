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

"""The Text VAE of Cola-DLM: block-causal transformer encoder and decoder between tokens and latents."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..attention_cola import ColaAttnProcessorMixin, ColaKVCache, ColaLayerCache, block_causal_mask, check_cache_inputs
from ..embeddings_cola import ColaTextRotaryEmbedding, apply_rotary_emb
from .vae_cola import ColaTextDecoderOutput, ColaTextEncoderOutput, ColaTextLatentDistribution


class ColaTextAttnProcessor(ColaAttnProcessorMixin):
    """
    Processor of [`ColaTextAttention`]: q/k/v projection, q/k LayerNorm over the full width, half-rotation RoPE and
    attention through diffusers' dispatcher, over the layer's key/value cache when there is one.
    """

    def __call__(
        self,
        attn: "ColaTextAttention",
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, ...] | None = None,
        layer_cache: ColaLayerCache | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        # `hidden_states` is `(batch_size, sequence_length, dim)` or its tokens as rows, `(N, dim)`.
        rows_shape, sequence_length = hidden_states.shape[:-1], rotary_emb[0].shape[1]
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        # Queries and keys rotate as one tensor: one RoPE application instead of two.
        query_key = torch.stack([attn.norm_q(query), attn.norm_k(key)])
        query_key = query_key.view(2, -1, sequence_length, attn.heads, attn.head_dim)
        query, key = apply_rotary_emb(query_key, rotary_emb).unbind(0)
        value = value.view(-1, sequence_length, attn.heads, attn.head_dim)
        hidden_states = self.attend(query, key, value, attention_mask, layer_cache, cache_position)
        return attn.to_out(hidden_states.reshape(*rows_shape, -1))


class ColaTextAttention(nn.Module, AttentionModuleMixin):
    """Multi-head self-attention with LayerNorm over the full query/key width and half-rotation RoPE."""

    _default_processor_cls = ColaTextAttnProcessor
    _available_processors = [ColaTextAttnProcessor]

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool,
        out_bias: bool,
        qk_norm: bool,
        qk_norm_affine: bool,
        eps: float,
    ):
        super().__init__()
        self.heads = num_heads
        self.head_dim = dim // num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.norm_q = nn.LayerNorm(dim, eps=eps, elementwise_affine=qk_norm_affine) if qk_norm else nn.Identity()
        self.norm_k = nn.LayerNorm(dim, eps=eps, elementwise_affine=qk_norm_affine) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(dim, dim, bias=out_bias)
        self.set_processor(ColaTextAttnProcessor())

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, ...] | None = None,
        layer_cache: ColaLayerCache | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        return self.processor(self, hidden_states, attention_mask, rotary_emb, layer_cache, cache_position)


class ColaSwiGLU(nn.Module):
    """SwiGLU feed-forward: `proj_out(silu(gate) · x)` with `x, gate = proj_in(h).chunk(2)`."""

    def __init__(self, dim: int, ffn_dim: int, bias: bool):
        super().__init__()
        self.proj_in = nn.Linear(dim, ffn_dim, bias=bias)
        self.proj_out = nn.Linear(ffn_dim // 2, dim, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states, gate = self.proj_in(hidden_states).chunk(2, dim=-1)
        return self.proj_out(F.silu(gate) * hidden_states)


class ColaTextBlock(nn.Module):
    """
    Transformer block of the Text VAE.

    Post-norm (the released configuration): `x = norm_attn(x) + attn(x)`, then `x = x + norm_ff(ff(x))`.
    Pre-norm: `x = x + attn(norm_attn(x))`, then `x = x + ff(norm_ff(x))`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        *,
        bias: bool,
        qkv_bias: bool,
        qk_norm: bool,
        qk_norm_affine: bool,
        norm_affine: bool,
        post_norm: bool,
        eps: float,
    ):
        super().__init__()
        self.post_norm = post_norm
        self.norm_attn = nn.LayerNorm(dim, eps=eps, elementwise_affine=norm_affine)
        self.attn = ColaTextAttention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            out_bias=bias,
            qk_norm=qk_norm,
            qk_norm_affine=qk_norm_affine,
            eps=eps,
        )
        self.norm_ff = nn.LayerNorm(dim, eps=eps)
        self.ff = ColaSwiGLU(dim, ffn_dim, bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, ...],
        attention_mask: torch.Tensor | None = None,
        layer_cache: ColaLayerCache | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        attention_args = (attention_mask, rotary_emb, layer_cache, cache_position)
        if self.post_norm:
            hidden_states = self.norm_attn(hidden_states) + self.attn(hidden_states, *attention_args)
            return hidden_states + self.norm_ff(self.ff(hidden_states))
        hidden_states = hidden_states + self.attn(self.norm_attn(hidden_states), *attention_args)
        return hidden_states + self.ff(self.norm_ff(hidden_states))


class ColaTextTransformer(nn.Module):
    """The stack of [`ColaTextBlock`]s shared by encoder and decoder, with its RoPE table."""

    def __init__(self, num_blocks: int, rope_theta: float, **block_kwargs):
        super().__init__()
        self.rotary_embedder = ColaTextRotaryEmbedding(block_kwargs["dim"] // block_kwargs["num_heads"], rope_theta)
        self.blocks = nn.ModuleList([ColaTextBlock(**block_kwargs) for _ in range(num_blocks)])
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        kv_cache: ColaKVCache | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        rotary_emb = self.rotary_embedder(position_ids)
        # Tokens as the rows of a 2-D stream: one matmul per linear.
        batch_size, sequence_length, _ = hidden_states.shape
        hidden_states = hidden_states.flatten(0, 1)
        for layer_idx, block in enumerate(self.blocks):
            layer_cache = None if kv_cache is None else kv_cache.layer(layer_idx)
            args = (hidden_states, rotary_emb, attention_mask, layer_cache, cache_position)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, *args)
            else:
                hidden_states = block(*args)
        return hidden_states.view(batch_size, sequence_length, -1)


class AutoencoderKLColaText(ModelMixin, ConfigMixin):
    """
    The Text VAE of Cola-DLM. The encoder maps tokens to a Gaussian posterior with one latent per `patch_size`
    tokens; the decoder maps latents to token logits. Both attend bidirectionally inside a block of `block_size`
    latents and causally across blocks.

    Latents enter the DiT as `(z - shifting_factor) * scaling_factor`.

    Args:
        vocab_size (`int`, defaults to 100278): Tokenizer entries; the embedding has one extra row.
        latent_dim (`int`, defaults to 16): Channels of a latent.
        hidden_size (`int`, defaults to 1536): Transformer width.
        num_attention_heads (`int`, defaults to 12): Attention heads.
        ffn_dim (`int`, defaults to 8192): Output width of the SwiGLU input projection (twice the inner width).
        encoder_num_blocks (`int`, defaults to 4), decoder_num_blocks (`int`, defaults to 4): Depths.
        patch_size (`int`, defaults to 1): Tokens per latent.
        block_size (`int`, defaults to 16): Latents per attention block.
        bias (`bool`, defaults to `True`): Bias of the attention output and feed-forward projections, of the encoder's
            output projection and of the decoder's input projection and vocabulary head.
        qkv_bias (`bool`, defaults to `False`): Bias of the query/key/value projection.
        qk_norm (`bool`, defaults to `True`), qk_norm_affine (`bool`, defaults to `True`): LayerNorm on queries/keys.
        norm_affine (`bool`, defaults to `True`): Affine attention LayerNorm of the blocks (the others always are).
        post_norm (`bool`, defaults to `True`): Post-norm blocks (see [`ColaTextBlock`]).
        norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon.
        rope_theta (`float`, defaults to 500000.0): RoPE base.
        normalize_mean (`bool`, defaults to `True`): Non-affine LayerNorm on the posterior mean.
        scaling_factor (`float`, defaults to 1.0), shifting_factor (`float`, defaults to 0.0): Latent normalisation.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ColaTextBlock"]

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 100278,
        latent_dim: int = 16,
        hidden_size: int = 1536,
        num_attention_heads: int = 12,
        ffn_dim: int = 8192,
        encoder_num_blocks: int = 4,
        decoder_num_blocks: int = 4,
        patch_size: int = 1,
        block_size: int = 16,
        bias: bool = True,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        qk_norm_affine: bool = True,
        norm_affine: bool = True,
        post_norm: bool = True,
        norm_eps: float = 1e-6,
        rope_theta: float = 500000.0,
        normalize_mean: bool = True,
        scaling_factor: float = 1.0,
        shifting_factor: float = 0.0,
    ):
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({hidden_size}) must be divisible by `num_attention_heads` ({num_attention_heads})."
            )
        if block_size < 1 or patch_size < 1:
            raise ValueError(f"`block_size` and `patch_size` must be >= 1, got {block_size} and {patch_size}.")
        transformer_kwargs = {
            "rope_theta": rope_theta,
            "dim": hidden_size,
            "num_heads": num_attention_heads,
            "ffn_dim": ffn_dim,
            "bias": bias,
            "qkv_bias": qkv_bias,
            "qk_norm": qk_norm,
            "qk_norm_affine": qk_norm_affine,
            "norm_affine": norm_affine,
            "post_norm": post_norm,
            "eps": norm_eps,
        }
        self.encoder = nn.Module()
        self.encoder.embed_tokens = nn.Embedding(vocab_size + 1, hidden_size)
        self.encoder.patch_embed = nn.Conv1d(hidden_size, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.encoder.transformer = ColaTextTransformer(encoder_num_blocks, **transformer_kwargs)
        self.encoder.proj_out = nn.Linear(hidden_size, 2 * latent_dim, bias=bias)

        self.decoder = nn.Module()
        self.decoder.proj_in = nn.Linear(latent_dim, hidden_size, bias=bias)
        self.decoder.transformer = ColaTextTransformer(decoder_num_blocks, **transformer_kwargs)
        self.decoder.unpatchify = nn.Linear(hidden_size, patch_size * hidden_size)
        self.decoder.norm_out = nn.LayerNorm(hidden_size, eps=norm_eps)
        self.decoder.lm_head = nn.Linear(hidden_size, vocab_size, bias=bias)

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Maps posterior latents to the DiT's space: `(z - shifting_factor) * scaling_factor`."""
        return (latents - self.config.shifting_factor) * self.config.scaling_factor

    def make_kv_cache(self, batch_size: int, max_length: int) -> ColaKVCache:
        """Allocates a decoder [`ColaKVCache`] of `max_length` latents for `batch_size` rows."""
        return ColaKVCache(
            len(self.decoder.transformer.blocks),
            batch_size,
            max_length,
            self.config.num_attention_heads,
            self.config.hidden_size // self.config.num_attention_heads,
            dtype=self.dtype,
            device=self.device,
        )

    @apply_forward_hook
    def encode(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, return_dict: bool = True
    ) -> ColaTextEncoderOutput | tuple:
        """
        Encodes tokens into the posterior over latents.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids; `sequence_length` must be a multiple of `patch_size`. Sequences start at position 0.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding after the end of a sequence.
            return_dict (`bool`, defaults to `True`): Return a [`ColaTextEncoderOutput`] instead of a tuple.

        Returns:
            [`ColaTextEncoderOutput`] or `tuple`: the posterior, `(batch_size, sequence_length / patch_size,
            latent_dim)`.
        """
        patch_size = self.config.patch_size
        if input_ids.ndim != 2 or input_ids.shape[1] % patch_size:
            raise ValueError(
                f"`input_ids` must have shape (batch_size, sequence_length) with sequence_length a multiple of "
                f"patch_size={patch_size}, got {tuple(input_ids.shape)}."
            )
        batch_size, sequence_length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        latent_valid = attention_mask.bool().unflatten(1, (-1, patch_size)).any(-1)
        position_ids = torch.arange(sequence_length // patch_size, device=input_ids.device).expand(batch_size, -1)
        mask = block_causal_mask(position_ids, position_ids, latent_valid, self.config.block_size)

        hidden_states = self.encoder.embed_tokens(input_ids)
        hidden_states = self.encoder.patch_embed(hidden_states.transpose(1, 2)).transpose(1, 2)
        hidden_states = self.encoder.transformer(hidden_states, position_ids, mask)
        mean, logvar = self.encoder.proj_out(hidden_states).chunk(2, dim=-1)
        if self.config.normalize_mean:
            mean = F.layer_norm(mean, mean.shape[-1:], eps=self.config.norm_eps)
        posterior = ColaTextLatentDistribution(mean, logvar)

        if not return_dict:
            return (posterior,)
        return ColaTextEncoderOutput(latent_dist=posterior)

    @apply_forward_hook
    def decode(
        self,
        latents: torch.Tensor,
        position_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: ColaKVCache | None = None,
        cache_position: torch.LongTensor | None = None,
        return_dict: bool = True,
    ) -> ColaTextDecoderOutput | tuple:
        """
        Decodes latents into token logits.

        Args:
            latents (`torch.Tensor` of shape `(batch_size, num_latents, latent_dim)`): Latents in the DiT's space.
            position_ids (`torch.LongTensor` of shape `(batch_size, num_latents)`, *optional*):
                RoPE positions; default `0, 1, ...`.
            attention_mask (`torch.BoolTensor`, *optional*):
                `(batch_size, 1, num_latents, num_keys)`, True where a latent may attend to a key (see
                [`block_causal_mask`]); the keys are `latents` themselves, or all cache slots with `kv_cache`.
                Default: block-causal attention over `latents`.
            kv_cache ([`ColaKVCache`], *optional*): Decoder cache to write (at `cache_position`) and read.
            cache_position (`torch.LongTensor` of shape `(num_latents,)`, *optional*): Cache slots written.
            return_dict (`bool`, defaults to `True`): Return a [`ColaTextDecoderOutput`] instead of a tuple.

        Returns:
            [`ColaTextDecoderOutput`] or `tuple`: logits of shape `(batch_size, num_latents * patch_size,
            vocab_size)`.
        """
        if latents.ndim != 3 or latents.shape[-1] != self.config.latent_dim:
            raise ValueError(
                f"`latents` must have shape (batch_size, num_latents, {self.config.latent_dim}), got "
                f"{tuple(latents.shape)}."
            )
        batch_size, num_latents, _ = latents.shape
        if position_ids is None:
            position_ids = torch.arange(num_latents, device=latents.device).expand(batch_size, -1)
        check_cache_inputs(batch_size, kv_cache, attention_mask, cache_position)
        if attention_mask is None:
            key_valid = torch.ones_like(position_ids, dtype=torch.bool)
            attention_mask = block_causal_mask(position_ids, position_ids, key_valid, self.config.block_size)

        hidden_states = self.decoder.proj_in(latents.to(self.decoder.proj_in.weight.dtype))
        hidden_states = self.decoder.transformer(hidden_states, position_ids, attention_mask, kv_cache, cache_position)
        # The unpatchify projection is laid out channel-major: token j of a patch reads channels c * patch_size + j.
        hidden_states = self.decoder.unpatchify(hidden_states).unflatten(-1, (-1, self.config.patch_size))
        hidden_states = hidden_states.transpose(-1, -2).flatten(1, 2)
        logits = self.decoder.lm_head(self.decoder.norm_out(hidden_states))

        if not return_dict:
            return (logits,)
        return ColaTextDecoderOutput(logits=logits)

    def forward(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, return_dict: bool = True
    ) -> ColaTextDecoderOutput | tuple:
        """Reconstructs tokens from the posterior mean: `decode(normalize_latents(encode(input_ids).mode()))`."""
        latents = self.normalize_latents(self.encode(input_ids, attention_mask).latent_dist.mode())
        return self.decode(latents, return_dict=return_dict)
