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

"""
Continuous batching at block boundaries: a running batch of prompts on caches of fixed capacity, which prompts join
and leave between two blocks, each prompt generating what it generates alone.
"""

from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from ...generation.request import GenerationRequest
from ...generation.stopping import Completion, finish_reasons
from ...models.attention_cola import block_causal_mask
from .layout import ColaDLMLayout, GeneratedBlock, count_blocks
from .sampler import BlockSampler, encode_prompt, retrieve_timesteps


def step_loop(request: GenerationRequest, guider=None) -> tuple:
    """
    The settings of a request that shape the step loop itself, which only requests that share them can run in one
    batch: steps per block, block length, custom schedule, and with a `guider` (which has no per-row scale) the
    guidance scale.
    """
    loop = (request.num_inference_steps, request.block_length, request.timesteps, request.sigmas)
    return loop + ((request.guidance_scale,) if guider is not None else ())


@dataclass
class BatchRow:
    """
    One prompt of a [`RunningBatch`]: its request (one prompt and its settings), its generator, its noise and the
    tokens it sampled, and where its first block repaints prompt latents. `owner` is the caller's.
    """

    request: GenerationRequest
    generator: torch.Generator
    noise: torch.Tensor
    prefix_length: int
    num_trimmed_tokens: int
    repainted: torch.BoolTensor
    repaint_latents: torch.Tensor
    tokens: torch.LongTensor
    num_blocks: int
    owner: Any = None
    block_index: int = 0
    completion: Completion | None = None

    @property
    def finished(self) -> bool:
        return self.block_index == self.num_blocks or (self.completion is not None and self.completion.stopped)

    @property
    def finish_reason(self) -> str:
        return finish_reasons([self.completion])[0]

    def block_tokens(self, index: int) -> torch.LongTensor:
        """The tokens sampled for block `index`."""
        size = self.tokens.shape[0] // self.num_blocks
        return self.tokens[index * size : (index + 1) * size]

    @property
    def guidance(self) -> float:
        """The guidance scale of the row's next block: 1 for a first block without context."""
        return 1.0 if self.block_index == 0 and self.prefix_length == 0 else self.request.guidance_scale


@dataclass
class RingLayout:
    """
    Where the rows of a running batch sit in its caches: slots `[0, cache_length)` of every row form a ring that
    the blocks of all rows write in step, the next block at the same slots for every row, each row's context behind
    it. `positions` and `valid` say which position every slot of a row holds, if any.
    """

    block_length: int
    decoder_block_size: int
    positions: torch.LongTensor
    valid: torch.BoolTensor
    slots: torch.LongTensor

    @classmethod
    def empty(cls, batch_size: int, cache_length: int, block_length: int, decoder_block_size: int, device):
        positions = torch.zeros(batch_size, cache_length, dtype=torch.long, device=device)
        slots = torch.arange(cache_length, device=device)
        return cls(block_length, decoder_block_size, positions, torch.zeros_like(positions, dtype=torch.bool), slots)

    @property
    def batch_size(self) -> int:
        return self.positions.shape[0]

    @property
    def cache_length(self) -> int:
        return self.slots.shape[0]

    def mask(self, count: int, position_ids: torch.LongTensor, cache_position: torch.LongTensor, block_size: int):
        """The block-causal mask of the first `count` rows' queries at `position_ids` in slots `cache_position`."""
        return block_causal_mask(position_ids, self.positions[:count], self.valid[:count], block_size, cache_position)

    def move_row(self, source: int, target: int):
        self.positions[target], self.valid[target] = self.positions[source], self.valid[source]


class RunningBatch:
    """
    Prompts that generate together, block by block, on caches planned once: at most `max_rows` prompts of at most
    `max_length` tokens each (prompt and new tokens), with the step loop of `settings` (steps per block, block length,
    custom schedule). Between two blocks, `add` prefills new prompts into free rows and `run_block` drops the rows
    that finished; everything else (prompt, length, guidance scale, sampling, stops, seed) is per row.

    A row's noise, sampling and stops are its own, so its tokens are those it gets from [`ColaDLMPipeline`] alone
    with its own generator.
    """

    def __init__(self, pipe, settings: GenerationRequest, max_rows: int, max_length: int):
        self.pipe, self.settings, self.max_length = pipe, settings, max_length
        self.device = pipe._execution_device
        self.tokens_per_block = settings.block_length * pipe.vae.config.patch_size
        cache_length = (-(-max_length // self.tokens_per_block) + 1) * settings.block_length
        self.ring = RingLayout.empty(
            max_rows, cache_length, settings.block_length, pipe.vae.config.block_size, self.device
        )
        timesteps = retrieve_timesteps(pipe.scheduler, settings, self.device)
        self.sampler = BlockSampler(pipe.transformer, pipe.vae, pipe.scheduler, pipe.guider, self.ring, timesteps)
        self.transformer_cache, self.vae_cache = self.sampler.transformer_cache, self.sampler.vae_cache
        self.rows: list[BatchRow] = []
        self.next_slot = 0
        self.num_blocks_run = 0

    @property
    def free_rows(self) -> int:
        return self.ring.batch_size - len(self.rows)

    def accepts(self, request: GenerationRequest) -> bool:
        """Whether `request` has this batch's step loop."""
        return step_loop(request, self.pipe.guider) == step_loop(self.settings, self.pipe.guider)

    @torch.no_grad()
    def add(
        self, requests: list[GenerationRequest], generators: list[torch.Generator], owners: list
    ) -> list[BatchRow]:
        """
        Prefills the prompts of `requests` (one each) into free rows; they generate their first block at the next
        `run_block`.
        """
        if len(requests) > self.free_rows:
            raise ValueError(f"{len(requests)} prompts do not fit the {self.free_rows} free rows.")
        for request in requests:
            num_prompt_tokens = len(request.prompt_token_ids[0])
            prefix_length, num_blocks = self.extent(num_prompt_tokens, request.gen_length)
            if prefix_length + num_blocks * self.settings.block_length > self.ring.cache_length:
                raise ValueError(
                    f"A prompt of {num_prompt_tokens} tokens and {request.gen_length} new ones does not fit the "
                    f"batch's context of {self.max_length} tokens."
                )
        rows = []
        entries = sorted(zip(requests, generators, owners), key=lambda entry: entry[0].pad_token_id)
        for pad_token_id, group in groupby(entries, key=lambda entry: entry[0].pad_token_id):
            rows += self.prefill(list(group), pad_token_id)
        return rows

    def prefill(self, entries: list[tuple], pad_token_id: int) -> list[BatchRow]:
        """Prefills prompts of one pad token into the next free rows, their context ending at the next block."""
        vae, block_length = self.pipe.vae, self.settings.block_length
        prompt_token_ids = [request.prompt_token_ids[0] for request, _, _ in entries]
        prompt_latents, lengths = encode_prompt(vae, prompt_token_ids, block_length, pad_token_id, self.device)
        layout = ColaDLMLayout.from_prompts(prompt_latents, lengths, 1, block_length, vae.config)
        prefill = BlockSampler(
            self.pipe.transformer, vae, self.pipe.scheduler, None, layout, prompt_latents.new_zeros(0)
        )
        prefill.prefill(prompt_latents)
        start, stop = len(self.rows), len(self.rows) + len(entries)
        self.ring.valid[start:stop] = False
        if layout.max_prefix:
            slots = (
                self.next_slot - layout.max_prefix + self.ring.slots[: layout.max_prefix]
            ) % self.ring.cache_length
            for cache, written in (
                (self.transformer_cache, prefill.transformer_cache),
                (self.vae_cache, prefill.vae_cache),
            ):
                cache.keys[:, start:stop, slots] = written.keys[:, :, : layout.max_prefix]
                cache.values[:, start:stop, slots] = written.values[:, :, : layout.max_prefix]
            self.ring.positions[start:stop, slots] = layout.position_ids[:, : layout.max_prefix]
            self.ring.valid[start:stop, slots] = layout.slot_valid[:, : layout.max_prefix]
        rows = [self.make_row(entry, layout, index) for index, entry in enumerate(entries)]
        self.rows += rows
        return rows

    def extent(self, num_prompt_tokens: int, gen_length: int) -> tuple[int, int]:
        """The prefix (latents) and the blocks of a prompt of `num_prompt_tokens` tokens that adds `gen_length`."""
        patch_size, block_length = self.pipe.vae.config.patch_size, self.settings.block_length
        prefix_length = -(-num_prompt_tokens // patch_size) // block_length * block_length
        return prefix_length, count_blocks([num_prompt_tokens], gen_length, block_length, patch_size)

    def make_row(self, entry: tuple, layout: ColaDLMLayout, index: int) -> BatchRow:
        """The row of prompt `index` of a prefilled `layout`, with the noise of all its blocks drawn."""
        request, generator, owner = entry
        prefix_length, num_blocks = self.extent(len(request.prompt_token_ids[0]), request.gen_length)
        shape = (1, num_blocks * self.settings.block_length, self.pipe.transformer.config.in_channels)
        return BatchRow(
            request=request,
            generator=generator,
            noise=randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)[0],
            prefix_length=prefix_length,
            num_trimmed_tokens=layout.num_trimmed_tokens[index],
            repainted=layout.repainted[index],
            repaint_latents=layout.repaint_latents[index],
            tokens=torch.full((num_blocks * self.tokens_per_block,), request.pad_token_id, device=self.device),
            num_blocks=num_blocks,
            owner=owner,
        )

    def remove(self, rows: list[BatchRow]):
        """Drops `rows` from the batch: the last rows move into their places."""
        for row in rows:
            index, last = self.rows.index(row), len(self.rows) - 1
            if index != last:
                for cache in (self.transformer_cache, self.vae_cache, self.ring):
                    cache.move_row(last, index)
                self.rows[index] = self.rows[last]
            self.rows.pop()

    def block(self) -> GeneratedBlock:
        """The next block of every row: its slots (the same for all rows), positions, masks, repaint and guidance."""
        count, block_length, ring = len(self.rows), self.settings.block_length, self.ring
        offsets = ring.slots[:block_length]
        cache_position = (self.next_slot + offsets) % ring.cache_length
        starts = [row.prefix_length + row.block_index * block_length for row in self.rows]
        position_ids = torch.tensor(starts, device=self.device)[:, None] + offsets
        ring.positions[:count, cache_position] = position_ids
        ring.valid[:count, cache_position] = True
        attention_mask = ring.mask(count, position_ids, cache_position, block_length)
        first = [row.block_index == 0 and row.num_trimmed_tokens > 0 for row in self.rows]
        guidance = [row.guidance for row in self.rows]
        return GeneratedBlock(
            index=self.num_blocks_run,
            latent_slice=None,
            token_slice=None,
            cache_position=cache_position,
            position_ids=position_ids,
            unconditional_position_ids=offsets.expand(count, -1),
            attention_mask=attention_mask,
            decoder_attention_mask=(
                attention_mask
                if ring.decoder_block_size == block_length
                else ring.mask(count, position_ids, cache_position, ring.decoder_block_size)
            ),
            repainted=torch.stack([row.repainted & is_first for row, is_first in zip(self.rows, first)])
            if any(first)
            else None,
            repaint_latents=torch.stack([row.repaint_latents for row in self.rows]),
            guidance_scale=1.0 if all(scale == 1.0 for scale in guidance) else max(guidance),
            guidance=torch.tensor(guidance, device=self.device)[:, None, None],
        )

    @torch.no_grad()
    def run_block(self) -> list[BatchRow]:
        """Generates the next block of every row; returns the rows that finished, which have left the batch."""
        count, block_length = len(self.rows), self.settings.block_length
        self.sampler.transformer_cache = self.transformer_cache.rows(count)
        self.sampler.vae_cache = self.vae_cache.rows(count)
        block = self.block()
        noise = [row.noise[row.block_index * block_length : (row.block_index + 1) * block_length] for row in self.rows]
        latents = block.repaint(torch.stack(noise))
        schedule = retrieve_timesteps(self.pipe.scheduler, self.settings, self.device)
        for step_index, t in enumerate(schedule):
            latents, _ = self.sampler.denoise_step(block, latents, t, step_index, len(schedule))
        logits = self.sampler.decode_block(block, latents)
        for index, row in enumerate(self.rows):
            self.sample(row, logits[index : index + 1])
        finished = [row for row in self.rows if row.finished]
        if len(finished) < count:
            # The block's clean latents become the context of the rows' next blocks.
            self.sampler.write_block(block, latents)
        self.remove(finished)
        self.next_slot = (self.next_slot + block_length) % self.ring.cache_length
        self.num_blocks_run += 1
        return finished

    def sample(self, row: BatchRow, logits: torch.Tensor):
        """Samples the row's block of tokens from its `logits` and cuts its text at its first stop."""
        start = row.block_index * self.tokens_per_block
        end = start + self.tokens_per_block
        history = row.tokens[None, :start]
        sampled = row.request.sampling(logits, history, [row.generator], [row.num_trimmed_tokens])
        row.block_tokens(row.block_index)[:] = sampled[0]
        new_token_ids = row.tokens[row.num_trimmed_tokens : min(row.num_trimmed_tokens + row.request.gen_length, end)]
        row.completion = row.request.truncate(self.pipe.tokenizer, new_token_ids.tolist())
        row.block_index += 1
