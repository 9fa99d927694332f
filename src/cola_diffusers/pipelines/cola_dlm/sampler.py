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

"""The model passes of block-causal generation: prompt encoding, noise, timesteps and the per-request sampler."""

import inspect

import torch
import torch.nn.functional as F
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ...generation.request import GenerationRequest
from ...models.attention_cola import additive_mask
from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...models.transformers.transformer_cola import ColaModulationTable, ColaTransformer1DModel
from .cuda_graphs import ColaDiTGraphs
from .layout import ColaDLMLayout, DiTPass, GeneratedBlock


# A finished block whose clean latents a DiT pass writes into the cache, and those latents.
Commit = tuple[GeneratedBlock, torch.Tensor]


def encode_prompt(
    vae: AutoencoderKLColaText,
    prompt_token_ids: tuple[tuple[int, ...], ...],
    block_length: int,
    pad_token_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.LongTensor]:
    """
    Encodes tokenised prompts into normalised latents (posterior means).

    Every prompt is right-padded with `pad_token_id` to a multiple of `patch_size * block_length` tokens before
    encoding: the pad tokens share the last prompt block and shape its latents, as in training.

    Returns:
        `(prompt_latents, num_prompt_tokens)`: latents `(batch_size, max_latents, latent_dim)`, right-padded,
        and the number of prompt tokens, `(batch_size,)`.
    """
    chunk = vae.config.patch_size * block_length
    padded_lengths = [-(-len(ids) // chunk) * chunk for ids in prompt_token_ids]
    input_ids = torch.full((len(prompt_token_ids), max(padded_lengths)), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, (ids, padded_length) in enumerate(zip(prompt_token_ids, padded_lengths)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, :padded_length] = 1

    posterior = vae.encode(input_ids.to(device), attention_mask.to(device)).latent_dist
    prompt_latents = vae.normalize_latents(posterior.mode()).float()
    num_prompt_tokens = torch.tensor([len(ids) for ids in prompt_token_ids], device=device)
    return prompt_latents, num_prompt_tokens


def prepare_latents(
    transformer: ColaTransformer1DModel,
    layout: ColaDLMLayout,
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """The starting noise of every block, `(batch_size, num_blocks * block_length, latent_dim)`, fp32."""
    shape = (layout.batch_size, layout.num_blocks * layout.block_length, transformer.config.in_channels)
    if latents is None:
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    if tuple(latents.shape) != shape:
        raise ValueError(
            f"`latents` must have shape {shape} (batch_size, num_blocks * block_length, latent_dim) for this "
            f"request, got {tuple(latents.shape)}."
        )
    return latents.to(device=device, dtype=torch.float32)


def retrieve_timesteps(scheduler: SchedulerMixin, request: GenerationRequest, device: torch.device) -> torch.Tensor:
    """
    Calls `scheduler.set_timesteps` with the request's step count, custom `timesteps` or custom `sigmas`; returns the
    scheduler's timesteps.
    """
    for name in ("timesteps", "sigmas"):
        value = getattr(request, name)
        if value is not None:
            if name not in inspect.signature(scheduler.set_timesteps).parameters:
                raise ValueError(f"The scheduler {scheduler.__class__.__name__} does not accept custom `{name}`.")
            scheduler.set_timesteps(**{name: list(value)}, device=device)
            break
    else:
        scheduler.set_timesteps(request.num_inference_steps, device=device)
    if hasattr(scheduler, "set_begin_index"):
        # Every block starts at the first timestep: the scheduler need not search for it (a host synchronisation).
        scheduler.set_begin_index(0)
    return scheduler.timesteps


class BlockSampler:
    """
    One request's generation state: its components, its [`ColaDLMLayout`], the key/value caches of the DiT and of
    the VAE decoder, and the DiT's AdaLN table of the request's timesteps, with the passes of block-causal sampling.
    Nothing of a request is stored on the models, so two samplers may share them.

    A request runs `prefill` once, then for every generated block `denoise_step` once per scheduler step and
    `decode_block`. A finished block becomes the context of the next ones when it is passed as `commit` to the first
    step of the next block: without an unguided branch, that step's DiT pass writes it into the cache while
    denoising the next block, so that a one-step sampler without guidance runs one DiT pass per block.

    With guidance, both branches run in one DiT pass over the same rows: the block with its context, then the block
    alone at positions `0, 1, ...`, whose keys go to `block_length` scratch slots past the request's cache that
    only the unguided queries see. Everything a block's passes share (positions, RoPE tables, masks, cache slots) is
    computed once per block.

    Args:
        transformer ([`ColaTransformer1DModel`]), vae ([`AutoencoderKLColaText`]), scheduler ([`SchedulerMixin`]):
            The models and the scheduler of the pipeline.
        guider ([`~diffusers.guiders.BaseGuidance`], *optional*): Replaces the built-in classifier-free guidance.
        layout ([`ColaDLMLayout`]): Where the request's prompts and blocks sit in the caches.
        timesteps (`torch.Tensor`): The timesteps every block runs, whose AdaLN terms are computed once.
        graphs ([`ColaDiTGraphs`], *optional*): CUDA graphs that run the DiT passes of the steps; the request's DiT
            cache is then theirs.
    """

    def __init__(
        self,
        transformer: ColaTransformer1DModel,
        vae: AutoencoderKLColaText,
        scheduler: SchedulerMixin,
        guider: BaseGuidance | None,
        layout: ColaDLMLayout,
        timesteps: torch.Tensor,
        graphs: ColaDiTGraphs | None = None,
    ):
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.guider = guider
        self.layout = layout
        # Read once: `ModelMixin.dtype` walks the parameters, a cost per pass at batch 1.
        self.dtype = transformer.dtype
        self.decoder_dtype = vae.dtype
        # The `block_length` slots after the request's are the scratch slots of the unguided branch; a cache of the
        # CUDA graphs may have more, unused.
        make_kv_cache = transformer.make_kv_cache if graphs is None else graphs.kv_cache
        self.transformer_cache = make_kv_cache(layout.batch_size, layout.cache_length + layout.block_length)
        self.graphs = graphs
        self.vae_cache = vae.make_kv_cache(layout.batch_size, layout.cache_length)
        self.modulation = ColaModulationTable(timesteps)
        self.passes: tuple[int, dict[str, DiTPass]] | None = None

    def dit_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A mask over the request's cache as an additive mask over the DiT cache, the slots past it hidden."""
        return additive_mask(F.pad(mask, (0, self.transformer_cache.max_length - mask.shape[-1])), self.dtype)

    def dit_pass(self, position_ids: torch.LongTensor, cache_position: torch.LongTensor, mask: torch.Tensor):
        """The [`DiTPass`] at `position_ids` that writes `cache_position` with the additive attention `mask`."""
        rotary_emb = self.transformer.rotary_embedder(position_ids)
        return DiTPass(position_ids, rotary_emb, cache_position, mask)

    def block_pass(self, block: GeneratedBlock, kind: str) -> DiTPass:
        """
        The block's DiT pass of `kind`, computed at its first step: `"conditional"` (the block with its context),
        `"guided"` (then the block alone, over the scratch slots) or `"commit"` (the previous block at t = 0, then
        this block, each attending block-causally).
        """
        if self.passes is None or self.passes[0] != block.index:
            self.passes = (block.index, {})
        passes = self.passes[1]
        if kind not in passes:
            passes[kind] = self.make_block_pass(block, kind)
        return passes[kind]

    def make_block_pass(self, block: GeneratedBlock, kind: str) -> DiTPass:
        """The block's DiT pass of `kind` (see `block_pass`)."""
        layout, length = self.layout, self.layout.block_length
        if kind == "conditional":
            return self.dit_pass(block.position_ids, block.cache_position, self.dit_mask(block.attention_mask))
        if kind == "guided":
            scratch = torch.arange(layout.cache_length, layout.cache_length + length, device=layout.slots.device)
            alone_mask = F.pad(torch.zeros_like(block.attention_mask), (0, length), value=True)
            return self.dit_pass(
                torch.cat([block.position_ids, block.unconditional_position_ids], dim=1),
                torch.cat([block.cache_position, scratch]),
                torch.cat([self.dit_mask(block.attention_mask), self.dit_mask(alone_mask)], dim=2),
            )
        start, end = layout.max_prefix + (block.index - 1) * length, layout.max_prefix + (block.index + 1) * length
        mask = self.dit_mask(layout.context_mask(start, end, length))
        return self.dit_pass(layout.position_ids[:, start:end], layout.slots[start:end], mask)

    def run_transformer(
        self, latents: torch.Tensor, timestep: torch.Tensor, dit_pass: DiTPass, step: bool = False
    ) -> torch.Tensor:
        """
        One DiT pass of `latents` at `timestep` with the inputs of `dit_pass`, replayed from a CUDA graph when it is a
        denoising `step` and the sampler has graphs; returns the fp32 velocity.
        """
        latents = latents.to(self.dtype)
        if step and self.graphs is not None and self.modulation.terms is not None:
            return self.graphs(latents, timestep, dit_pass, self.transformer_cache, self.modulation).float()
        return dit_pass.run(self.transformer, latents, timestep, self.transformer_cache, self.modulation).float()

    def prefill(self, prompt_latents: torch.Tensor):
        """Writes the clean prefixes (t = 0) into both caches."""
        layout = self.layout
        if layout.max_prefix == 0:
            return
        prefix = layout.prefix(prompt_latents)
        position_ids, slots = layout.position_ids[:, : layout.max_prefix], layout.slots[: layout.max_prefix]
        mask = layout.context_mask(0, layout.max_prefix, layout.block_length)
        self.run_transformer(prefix, prefix.new_zeros(1, 1), self.dit_pass(position_ids, slots, self.dit_mask(mask)))
        self.vae.decode(
            prefix,
            position_ids=position_ids,
            attention_mask=layout.context_mask(0, layout.max_prefix, layout.decoder_block_size),
            kv_cache=self.vae_cache,
            cache_position=slots,
        )

    def velocity(
        self,
        block: GeneratedBlock,
        latents: torch.Tensor,
        t: torch.Tensor,
        unconditional: bool,
        *,
        commit: Commit | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """
        The DiT's velocity of the block's `latents` at `t`, with its cached context; with `unconditional`, also of
        the block alone (positions from 0, no context) in the same pass. With `commit`, first writes that finished
        block into the cache: in this pass, or in one of its own when there is an unguided branch. Returns the
        predictions, conditional first.
        """
        if commit is not None and unconditional:
            self.write_block(*commit)
        timestep = block.timestep(t)
        if unconditional:
            timestep = torch.cat([timestep] * 2, dim=1) if timestep.shape[1] > 1 else timestep
            velocity = self.run_transformer(
                torch.cat([latents] * 2, dim=1), timestep, self.block_pass(block, "guided"), step=True
            )
            return velocity.chunk(2, dim=1)
        if commit is not None:
            committed, committed_latents = commit
            if committed.index + 1 != block.index:
                raise ValueError(
                    f"`commit` must be the block before block {block.index}, got block {committed.index}."
                )
            timestep = torch.cat([torch.zeros_like(block.position_ids), timestep.expand_as(block.position_ids)], 1)
            inputs = torch.cat([committed_latents, latents], dim=1)
            velocity = self.run_transformer(inputs, timestep, self.block_pass(block, "commit"), step=True)
            return (velocity[:, latents.shape[1] :],)
        return (self.run_transformer(latents, timestep, self.block_pass(block, "conditional"), step=True),)

    def guided_velocity(
        self,
        block: GeneratedBlock,
        latents: torch.Tensor,
        t: torch.Tensor,
        step_index: int,
        num_steps: int,
        *,
        commit: Commit | None = None,
    ) -> torch.Tensor:
        """
        The guided velocity of one step: the built-in classifier-free guidance between the block with its context
        and the block alone, or the pipeline's `guider`, given its branches by name. `commit` as for `velocity`.
        """
        if self.guider is None:
            if block.guidance_scale == 1.0:
                return self.velocity(block, latents, t, unconditional=False, commit=commit)[0]
            velocity_cond, velocity_uncond = self.velocity(block, latents, t, unconditional=True, commit=commit)
            # `uncond + guidance * (cond - uncond)` in one operation.
            return torch.lerp(velocity_uncond, velocity_cond, block.guidance)

        self.guider.set_state(step=step_index, num_inference_steps=num_steps, timestep=t)
        guider_batches = self.guider.prepare_inputs({})
        if len(guider_batches) > 2:
            raise ValueError(
                f"{type(self.guider).__name__} asks for more than a conditional and an unconditional pass."
            )
        predictions = self.velocity(block, latents, t, unconditional=len(guider_batches) == 2, commit=commit)
        # The guider names its branches: the first of `_input_predictions` is the conditional one.
        by_name = dict(zip(self.guider._input_predictions, predictions))
        for batch in guider_batches:
            batch.noise_pred = by_name[getattr(batch, self.guider._identifier_key)]
        return self.guider(guider_batches).pred

    def denoise_step(
        self,
        block: GeneratedBlock,
        latents: torch.Tensor,
        t: torch.Tensor,
        step_index: int,
        num_steps: int,
        *,
        commit: Commit | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        One scheduler step of the block, repainted prompt latents kept; returns the new latents and the velocity.
        `commit`, the previous block, is written into the DiT cache by this step's pass (see `velocity`).
        """
        velocity = self.guided_velocity(block, latents, t, step_index, num_steps, commit=commit)
        return self.step(block, velocity, t, latents), velocity

    def step(self, block: GeneratedBlock, velocity: torch.Tensor, t: torch.Tensor, latents: torch.Tensor):
        """The scheduler's update of the block's `latents` by `velocity` at `t`, repainted prompt latents kept."""
        return block.repaint(self.scheduler.step(velocity, t, latents).prev_sample)

    def decode_block(self, block: GeneratedBlock, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's logits of the block's `latents`; writes the block into the decoder cache."""
        return self.vae.decode(
            latents,
            position_ids=block.position_ids,
            attention_mask=additive_mask(block.decoder_attention_mask, self.decoder_dtype),
            kv_cache=self.vae_cache,
            cache_position=block.cache_position,
        ).logits

    def write_block(self, block: GeneratedBlock, latents: torch.Tensor):
        """Writes a finished block's clean latents (t = 0) into the DiT cache in a pass of their own."""
        self.run_transformer(latents, latents.new_zeros(1, 1), self.make_block_pass(block, "conditional"))
