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

"""Where the prompts and the generated blocks of a request sit in the key/value caches of the DiT and VAE decoder."""

from dataclasses import dataclass

import torch

from ...models.attention_cola import block_causal_mask


def count_blocks(num_prompt_tokens: list[int], gen_length: int, block_length: int, patch_size: int) -> int:
    """
    The blocks a request generates: enough for `gen_length` new tokens after the prompt tokens that the first block
    re-emits (those past the prompts' last whole block).
    """
    prefix_lengths = [-(-length // patch_size) // block_length * block_length for length in num_prompt_tokens]
    num_trimmed_tokens = [length - prefix * patch_size for length, prefix in zip(num_prompt_tokens, prefix_lengths)]
    return -(-(max(num_trimmed_tokens) + gen_length) // (block_length * patch_size))


def gather_latents(latents: torch.Tensor, index: torch.LongTensor) -> torch.Tensor:
    """The latents `index` `(batch_size, n)` of every row of `latents` `(batch_size, length, latent_dim)`."""
    return latents.gather(1, index[..., None].expand(-1, -1, latents.shape[-1]))


@dataclass
class GeneratedBlock:
    """
    One generated block of a request (a span of `block_length` latents, not a model layer): its place in the
    request's buffers and caches, its attention masks, its repainted prompt latents and its guidance.

    Args:
        index (`int`): The block's index among the generated blocks.
        latent_slice (`slice`), token_slice (`slice`): The block's latents and tokens in the request's buffers; None
            in a running batch, whose rows are at different blocks.
        cache_position (`torch.LongTensor` of shape `(block_length,)`): The block's cache slots.
        position_ids (`torch.LongTensor` of shape `(batch_size, block_length)`): The block's positions.
        unconditional_position_ids (`torch.LongTensor`): Positions of the unconditional branch, from 0.
        attention_mask (`torch.BoolTensor`), decoder_attention_mask (`torch.BoolTensor`): The block's masks over
            the cache in the DiT and in the VAE decoder.
        repainted (`torch.BoolTensor` of shape `(batch_size, block_length)`, *optional*): Where prompt latents are
            repainted; None in a block without any.
        repaint_latents (`torch.Tensor` of shape `(batch_size, block_length, latent_dim)`): The repainted latents.
        guidance_scale (`float`): The request's guidance scale; 1 runs the conditional branch only.
        guidance (`torch.Tensor` or `float`): The scale of every prompt in this block.
    """

    index: int
    latent_slice: slice | None
    token_slice: slice | None
    cache_position: torch.LongTensor
    position_ids: torch.LongTensor
    unconditional_position_ids: torch.LongTensor
    attention_mask: torch.BoolTensor
    decoder_attention_mask: torch.BoolTensor
    repainted: torch.BoolTensor | None
    repaint_latents: torch.Tensor
    guidance_scale: float
    guidance: torch.Tensor | float

    def repaint(self, latents: torch.Tensor) -> torch.Tensor:
        """`latents` of the block with the repainted prompt latents put back."""
        if self.repainted is None:
            return latents
        return torch.where(self.repainted[..., None], self.repaint_latents, latents)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The DiT timestep of a step at `t`: per position where the block holds repainted latents, which are clean."""
        if self.repainted is None:
            return t.reshape(1, 1)
        return torch.where(self.repainted, torch.zeros_like(t), t)


@dataclass
class DiTPass:
    """
    The inputs of one kind of DiT pass over a block that do not change from step to step, computed once per block:
    positions, their RoPE tables, the cache slots written and the additive attention mask.
    """

    position_ids: torch.LongTensor
    rotary_emb: tuple[torch.Tensor, ...]
    cache_position: torch.LongTensor
    attention_mask: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.position_ids, *self.rotary_emb, self.cache_position, self.attention_mask)

    def clone(self) -> "DiTPass":
        rotary_emb = tuple(table.clone() for table in self.rotary_emb)
        return DiTPass(self.position_ids.clone(), rotary_emb, self.cache_position.clone(), self.attention_mask.clone())

    def copy_(self, other: "DiTPass"):
        """Copies the tensors of `other` into this pass's, in place."""
        for tensor, value in zip(self.tensors(), other.tensors()):
            tensor.copy_(value)

    def run(self, transformer, latents, timestep, kv_cache, modulation) -> torch.Tensor:
        """The DiT's output for `latents` at `timestep` with these inputs, its cache and AdaLN table."""
        return transformer(
            latents,
            timestep,
            position_ids=self.position_ids,
            attention_mask=self.attention_mask,
            kv_cache=kv_cache,
            cache_position=self.cache_position,
            modulation=modulation,
            rotary_emb=self.rotary_emb,
        ).sample


@dataclass
class ColaDLMLayout:
    """
    Where the prompts and the generated blocks of a request sit in the key/value caches of the DiT and of the VAE
    decoder.

    Whole blocks of prompt latents form each prompt's prefix; the rest of the prompt is repainted into the first
    generated block, whose tokens for it are trimmed from the output. Prefixes are left-padded to a common length so
    that block `b` of every prompt occupies the same cache slots `[max_prefix + b * block_length, ...)`. Example: a
    6-token prompt with block length 4 (patch size 1) has a prefix of 4 latents; its last 2 latents are repainted
    into the first block, whose first 2 tokens are trimmed.
    """

    block_length: int
    decoder_block_size: int
    tokens_per_block: int
    num_blocks: int
    max_prefix: int
    prefix_lengths: torch.LongTensor
    num_trimmed_tokens: list[int]
    position_ids: torch.LongTensor
    slot_valid: torch.BoolTensor
    slots: torch.LongTensor
    repainted: torch.BoolTensor
    repaint_latents: torch.Tensor

    @classmethod
    def from_prompts(
        cls,
        prompt_latents: torch.Tensor,
        num_prompt_tokens: torch.LongTensor,
        gen_length: int,
        block_length: int,
        vae_config,
    ) -> "ColaDLMLayout":
        """
        The layout of prompts encoded by `ColaDLMPipeline.encode_prompt` that generate `gen_length` tokens each, for
        the VAE of `vae_config` (its `patch_size` and decoder `block_size`).
        """
        patch_size, decoder_block_size = vae_config.patch_size, vae_config.block_size
        device = num_prompt_tokens.device
        num_prompt_latents = -(-num_prompt_tokens // patch_size)
        prefix_lengths = num_prompt_latents // block_length * block_length
        num_repainted = num_prompt_latents - prefix_lengths
        num_blocks = count_blocks(num_prompt_tokens.tolist(), gen_length, block_length, patch_size)
        max_prefix = int(prefix_lengths.max())
        cache_length = max_prefix + num_blocks * block_length
        position_ids = torch.arange(cache_length, device=device) - (max_prefix - prefix_lengths)[:, None]
        block_offsets = torch.arange(block_length, device=device)
        repaint_index = (prefix_lengths[:, None] + block_offsets).clamp(max=prompt_latents.shape[1] - 1)
        return cls(
            block_length=block_length,
            decoder_block_size=decoder_block_size,
            tokens_per_block=block_length * patch_size,
            num_blocks=num_blocks,
            max_prefix=max_prefix,
            prefix_lengths=prefix_lengths,
            num_trimmed_tokens=(num_prompt_tokens - prefix_lengths * patch_size).tolist(),
            position_ids=position_ids,
            slot_valid=position_ids >= 0,
            slots=torch.arange(cache_length, device=device),
            repainted=block_offsets < num_repainted[:, None],
            repaint_latents=gather_latents(prompt_latents, repaint_index),
        )

    @property
    def batch_size(self) -> int:
        return self.position_ids.shape[0]

    @property
    def cache_length(self) -> int:
        return self.slots.shape[0]

    def context_mask(self, start: int, end: int, block_size: int) -> torch.Tensor:
        """Mask of the queries in cache slots `[start, end)` over the whole cache (slots >= `end` unwritten)."""
        key_valid = self.slot_valid & (self.slots < end)
        return block_causal_mask(
            self.position_ids[:, start:end], self.position_ids, key_valid, block_size, self.slots[start:end]
        )

    def prefix(self, prompt_latents: torch.Tensor) -> torch.Tensor:
        """The clean prefixes, left-padded with zeros, `(batch_size, max_prefix, latent_dim)`."""
        position_ids = self.position_ids[:, : self.max_prefix]
        return gather_latents(prompt_latents, position_ids.clamp(min=0)) * self.slot_valid[:, : self.max_prefix, None]

    def new_token_ids(self, tokens: torch.LongTensor, end: int, gen_length: int) -> list[list[int]]:
        """Every prompt's new tokens among `tokens[:, :end]`: after its trimmed prompt tokens, at most `gen_length`."""
        return [
            tokens[row, start : min(start + gen_length, end)].tolist()
            for row, start in enumerate(self.num_trimmed_tokens)
        ]

    def empty_tokens(self, pad_token_id: int) -> torch.LongTensor:
        """A `(batch_size, num_blocks * tokens_per_block)` buffer of pad tokens for the sampled tokens."""
        shape = (self.batch_size, self.num_blocks * self.tokens_per_block)
        return torch.full(shape, pad_token_id, dtype=torch.long, device=self.slots.device)

    def block(self, index: int, guidance_scale: float) -> GeneratedBlock:
        """The generated block `index`; only the first one holds repainted prompt latents."""
        start = self.max_prefix + index * self.block_length
        end = start + self.block_length
        first = index == 0
        # Without a prefix the conditional and unconditional passes coincide: the first block uses scale 1.
        guidance = guidance_scale
        if first:
            guidance = torch.where(self.prefix_lengths > 0, guidance_scale, 1.0)[:, None, None]
        block_offsets = torch.arange(self.block_length, device=self.slots.device)
        attention_mask = self.context_mask(start, end, self.block_length)
        return GeneratedBlock(
            index=index,
            latent_slice=slice(index * self.block_length, (index + 1) * self.block_length),
            token_slice=slice(index * self.tokens_per_block, (index + 1) * self.tokens_per_block),
            cache_position=self.slots[start:end],
            position_ids=self.position_ids[:, start:end],
            unconditional_position_ids=block_offsets.expand(self.batch_size, -1),
            attention_mask=attention_mask,
            decoder_attention_mask=(
                attention_mask
                if self.decoder_block_size == self.block_length
                else self.context_mask(start, end, self.decoder_block_size)
            ),
            repainted=self.repainted if first and max(self.num_trimmed_tokens) > 0 else None,
            repaint_latents=self.repaint_latents,
            guidance_scale=guidance_scale,
            guidance=guidance,
        )
