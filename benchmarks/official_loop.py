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
The official Cola-DLM sampler's loop structure (`generate_task_repaint_inference`), on this project's modules.

This is the speed baseline of the benchmarks. It reuses the weights and per-layer modules of a `ColaDLMPipeline`
but mirrors how the official code spends its time:

- the batch is flattened to one sequence `(1, H, L_total, D)`; samples are kept apart by a dense additive mask
  built with Python loops over the samples (`create_na_block_causal_mask`), rebuilt on every model call;
- KV caches are per-layer Python lists of per-sample tensors grown with `torch.cat`. The DiT stores keys after
  `norm_k` and before RoPE, the VAE decoder stores raw keys (before its q/k norm); both re-apply norm/RoPE to the
  whole key sequence on every call, at per-sample positions computed on every call;
- attention is the explicit `softmax(q k^T / sqrt(d) + mask) v` of the official `slow_attn`, not SDPA;
- every denoising step runs a conditional DiT pass (the block against cache + block, read-only) and a separate
  unconditional pass (the block alone at positions `0..L-1`); after each block come the VAE decode (appending to
  its cache), greedy sampling with a repetition penalty, and a separate commit DiT pass at t = 0. As in the
  official loop the commit also runs after the last block, and both passes run even when the guidance is 1.

Results follow `ColaDLMPipeline.__call__(..., temperature=0, eos_early_stop=False, output_type="latent")`: the same
number of blocks, the same repaint of the prompt tail, the same trimming, the model's own dtypes (no autocast)
and the pipeline's fp32 Euler update. Prompts are tokenised and encoded with `pipe.make_request` and `pipe.encode_prompt`.

Usage:

    sequences, clean_latents, counts = official_generate(pipe, prompts, gen_length, num_inference_steps, guidance)

`counts` is `{"dit_forwards": ..., "vae_decoder_forwards": ...}`, the model calls of this run (prefills included).
"""

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from cola_diffusers.models.embeddings_cola import apply_rotary_emb


class ListKVCache:
    """The official KV cache: for every layer, a Python list of per-sample key (and value) tensors, or None."""

    def __init__(self, num_layers: int):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers

    def attend_keys(self, layer_idx, key, value, q_lens, update):
        """Flattened keys/values `[cache_0; new_0; cache_1; new_1; ...]`; `update` appends the new ones first."""
        new_keys, new_values = list(key.split(q_lens)), list(value.split(q_lens))
        cached_keys, cached_values = self.keys[layer_idx], self.values[layer_idx]
        if update:
            if cached_keys is None:
                self.keys[layer_idx] = [k.clone() for k in new_keys]
                self.values[layer_idx] = [v.clone() for v in new_values]
            else:
                self.keys[layer_idx] = [torch.cat([c, n]) for c, n in zip(cached_keys, new_keys)]
                self.values[layer_idx] = [torch.cat([c, n]) for c, n in zip(cached_values, new_values)]
            return torch.cat(self.keys[layer_idx]), torch.cat(self.values[layer_idx])
        if cached_keys is None:
            return key, value
        full_key = torch.cat([torch.cat([c, n]) for c, n in zip(cached_keys, new_keys)])
        full_value = torch.cat([torch.cat([c, n]) for c, n in zip(cached_values, new_values)])
        return full_key, full_value


def na_block_causal_mask(k_shape, q_shape, block_size, dtype, device):
    """The official `create_na_block_causal_mask`: additive `(1, 1, L_q, L_k)`, queries aligned to each key tail."""
    num_keys, num_queries = int(k_shape.sum().item()), int(q_shape.sum().item())
    k_cu, q_cu = F.pad(k_shape.cumsum(0), (1, 0)), F.pad(q_shape.cumsum(0), (1, 0))
    k_sample = torch.zeros(num_keys, dtype=torch.long, device=device)
    k_local = torch.zeros(num_keys, dtype=torch.long, device=device)
    q_sample = torch.zeros(num_queries, dtype=torch.long, device=device)
    q_local = torch.zeros(num_queries, dtype=torch.long, device=device)
    for b in range(k_shape.shape[0]):
        k_len, q_len = int(k_shape[b].item()), int(q_shape[b].item())
        if k_len > 0:
            k_sample[k_cu[b] : k_cu[b + 1]] = b
            k_local[k_cu[b] : k_cu[b + 1]] = torch.arange(k_len, device=device)
        if q_len > 0:
            q_sample[q_cu[b] : q_cu[b + 1]] = b
            q_local[q_cu[b] : q_cu[b + 1]] = torch.arange(k_len - q_len, k_len, device=device)
    same_sample = q_sample[:, None] == k_sample[None, :]
    allowed = same_sample & (q_local[:, None] // block_size >= k_local[None, :] // block_size)
    mask = torch.full((num_queries, num_keys), torch.finfo(dtype).min, dtype=dtype, device=device)
    return mask.masked_fill_(allowed, 0.0)[None, None]


def na_positions(k_shape, q_shape, device):
    """Per-sample RoPE positions of the flattened keys (`0..K-1`) and queries (`K-Q..K-1`), each `(1, L)`."""
    k_lens, q_lens = k_shape.tolist(), q_shape.tolist()
    k_pos = torch.cat([torch.arange(k, device=device) for k in k_lens])
    q_pos = torch.cat([torch.arange(k - q, k, device=device) for k, q in zip(k_lens, q_lens)])
    return k_pos[None], q_pos[None], q_lens


def official_interleaved_rotary_emb(x, positions, inv_freq):
    """The official DiT RoPE (rotary-embedding-torch, interleaved pairs): tables recomputed on every call, the
    rotated channels concatenated back to the rest. `x (L, H, D)`, `positions (L,)`."""
    angles = (positions.float()[:, None] * inv_freq).repeat_interleave(2, dim=-1)[:, None]
    rope_dim = angles.shape[-1]
    x_rot, x_pass = x[..., :rope_dim], x[..., rope_dim:]
    x_even, x_odd = x_rot.unflatten(-1, (-1, 2)).unbind(-1)
    rotated_half = torch.stack((-x_odd, x_even), dim=-1).flatten(-2)
    x_rot = (x_rot.float() * angles.cos() + rotated_half.float() * angles.sin()).to(x.dtype)
    return torch.cat([x_rot, x_pass], dim=-1)


def slow_attn(query, key, value, mask):
    """The official `slow_attn` on `(1, H, L, D)` tensors: pre-scaled `q k^T`, additive mask, softmax in fp32."""
    scores = query.mul(1.0 / query.shape[-1] ** 0.5) @ key.transpose(-2, -1)
    weights = (scores + mask.to(scores.dtype)).float().softmax(dim=-1)
    return weights.to(value.dtype) @ value


def attend(query, key, value, mask):
    """`slow_attn` of flattened `(L, H, D)` queries/keys/values; returns `(L_q, H * D)`."""
    out = slow_attn(query.transpose(0, 1)[None], key.transpose(0, 1)[None], value.transpose(0, 1)[None], mask)
    return out[0].transpose(0, 1).flatten(1)


def dit_forward(transformer, x, timestep, k_shape, q_shape, cache=None, update=False):
    """
    One official DiT call on a flattened batch: `x (L_q, C)`, per-token `timestep (L_q,)` → velocity `(L_q, C)`.

    `k_shape`/`q_shape` are the per-sample key/query lengths. With `cache`, keys are `[cache; block]` per sample,
    appended to the cache when `update`.
    """
    mask = na_block_causal_mask(k_shape, q_shape, transformer.config.block_size, transformer.dtype, x.device)
    k_pos, q_pos, q_lens = na_positions(k_shape, q_shape, x.device)
    temb = transformer.timestep_embedder(timestep.to(torch.bfloat16))
    hidden = transformer.proj_in(x)
    for layer_idx, block in enumerate(transformer.transformer_blocks):
        block_temb = F.silu(temb)
        shift, scale = block.norm1_modulation(block_temb).chunk(2, dim=-1)
        normed = block.norm1(hidden) * (1 + scale) + shift

        attn = block.attn
        query, key, value = attn.to_qkv(normed).unflatten(-1, (3, attn.heads, attn.head_dim)).unbind(1)
        query, key = attn.norm_q(query), attn.norm_k(key)
        if cache is not None:
            key, value = cache.attend_keys(layer_idx, key, value, q_lens, update)
        inv_freq = transformer.rotary_embedder.inv_freq
        query = official_interleaved_rotary_emb(query, q_pos[0], inv_freq)
        key = official_interleaved_rotary_emb(key, k_pos[0], inv_freq)
        hidden = hidden + block.attn_gate(block_temb) * attn.to_out(attend(query, key, value, mask))

        shift, scale = block.norm2_modulation(block_temb).chunk(2, dim=-1)
        hidden = hidden + block.ff_gate(block_temb) * block.ff(block.norm2(hidden) * (1 + scale) + shift)
    shift, scale = transformer.norm_out_modulation(F.silu(temb)).chunk(2, dim=-1)
    return transformer.proj_out(transformer.norm_out(hidden) * (1 + scale) + shift)


def vae_decode(vae, z, k_shape, q_shape, cache):
    """One official VAE decoder call (always appending to `cache`): `z (L_q, latent_dim)` → logits `(L_q * p, V)`."""
    decoder = vae.decoder
    mask = na_block_causal_mask(k_shape, q_shape, vae.config.block_size, vae.dtype, z.device)
    k_pos, q_pos, q_lens = na_positions(k_shape, q_shape, z.device)
    rotary_embedder = decoder.transformer.rotary_embedder
    hidden = decoder.proj_in(z.to(vae.dtype))
    for layer_idx, block in enumerate(decoder.transformer.blocks):
        attn = block.attn
        query, key, value = attn.to_qkv(hidden if block.post_norm else block.norm_attn(hidden)).chunk(3, dim=-1)
        key, value = cache.attend_keys(layer_idx, key, value, q_lens, update=True)
        query = attn.norm_q(query).unflatten(-1, (attn.heads, attn.head_dim))
        key = attn.norm_k(key).unflatten(-1, (attn.heads, attn.head_dim))
        value = value.unflatten(-1, (attn.heads, attn.head_dim))
        q_cos, q_sin, partner = rotary_embedder(q_pos)
        k_cos, k_sin, _ = rotary_embedder(k_pos)
        query = apply_rotary_emb(query, (q_cos[0], q_sin[0], partner))
        key = apply_rotary_emb(key, (k_cos[0], k_sin[0], partner))
        attn_output = attn.to_out(attend(query, key, value, mask))
        if block.post_norm:
            hidden = block.norm_attn(hidden) + attn_output
            hidden = hidden + block.norm_ff(block.ff(hidden))
        else:
            hidden = hidden + attn_output
            hidden = hidden + block.ff(block.norm_ff(hidden))
    patch_size = vae.config.patch_size
    hidden = decoder.unpatchify(hidden).unflatten(-1, (-1, patch_size)).transpose(-1, -2).flatten(0, 1)
    return decoder.lm_head(decoder.norm_out(hidden))


def greedy_tokens(logits, history, repetition_penalty):
    """The official `sample_with_strategies` at temperature 0: `logits (B, T, V)`, `history (B, n) | None`."""
    batch_size, num_tokens, _ = logits.shape
    logits = logits.float().flatten(0, 1).nan_to_num(nan=0.0, posinf=1e4, neginf=-1e4)
    if history is not None and repetition_penalty != 1.0:
        index = history.repeat_interleave(num_tokens, dim=0)
        score = logits.gather(1, index)
        score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        logits.scatter_(1, index, score)
    return logits.argmax(dim=-1).view(batch_size, num_tokens)


@torch.no_grad()
def official_generate(
    pipe,
    prompts: list[str],
    gen_length: int,
    num_inference_steps: int,
    guidance_scale: float,
    repetition_penalty: float = 1.1,
    latents: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.LongTensor, torch.Tensor, dict[str, int]]:
    """
    Greedy generation with the official loop structure.

    `latents` is the starting noise `(B, num_blocks * block_length, latent_dim)`, block `b` at
    `[b * block_length, (b + 1) * block_length)`, as in `ColaDLMPipeline`; drawn from `generator` when None.

    Returns:
        `(sequences, clean_latents, counts)`: the new tokens `(B, gen_length)` (prompt tail trimmed), the clean
        block latents `(B, num_blocks * block_length, latent_dim)` and the number of DiT and VAE decoder calls.
    """
    transformer, vae = pipe.transformer, pipe.vae
    device = pipe._execution_device
    block_length, patch_size = transformer.config.block_size, vae.config.patch_size
    num_train_timesteps = pipe.scheduler.config.num_train_timesteps
    batch_size = len(prompts)
    counts = {"dit_forwards": 0, "vae_decoder_forwards": 0}

    def dit(*args, **kwargs):
        counts["dit_forwards"] += 1
        return dit_forward(transformer, *args, **kwargs)

    def decode(*args):
        counts["vae_decoder_forwards"] += 1
        return vae_decode(vae, *args)

    # Prompt layout: whole prompt blocks form the prefix; the tail is repainted into the first block.
    request = pipe.make_request(prompt=prompts, block_length=block_length)
    prompt_latents, num_prompt_tokens = pipe.encode_prompt(request, device)
    prefix_lens, trim_counts = [], []
    repaint_mask = torch.zeros(batch_size, block_length, dtype=torch.bool, device=device)
    repaint_latents = torch.zeros(batch_size, block_length, prompt_latents.shape[-1], device=device)
    for i, num_tokens in enumerate(num_prompt_tokens.tolist()):
        num_latents = -(-num_tokens // patch_size)
        prefix_len = num_latents // block_length * block_length
        num_repainted = num_latents - prefix_len
        repaint_mask[i, :num_repainted] = True
        repaint_latents[i, :num_repainted] = prompt_latents[i, prefix_len:num_latents]
        prefix_lens.append(prefix_len)
        trim_counts.append(num_tokens - prefix_len * patch_size)
    repaint_mask, repaint_latents = repaint_mask.flatten(), repaint_latents.flatten(0, 1)
    tokens_per_block = block_length * patch_size
    num_blocks = -(-(max(trim_counts) + gen_length) // tokens_per_block)
    if latents is None:
        shape = (batch_size, num_blocks * block_length, transformer.config.in_channels)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    first_block_guidance = torch.tensor(
        [guidance_scale if p > 0 else 1.0 for p in prefix_lens], device=device
    ).repeat_interleave(block_length)[:, None]

    # Prefill the DiT (at t = 0) and the decoder caches with the prefixes.
    dit_cache = ListKVCache(len(transformer.transformer_blocks))
    vae_cache = ListKVCache(len(vae.decoder.transformer.blocks))
    k_shape = torch.tensor(prefix_lens, device=device)
    q_shape = torch.full((batch_size,), block_length, device=device)
    if any(prefix_lens):
        prefix = torch.cat([prompt_latents[i, :p] for i, p in enumerate(prefix_lens)])
        dit(prefix.to(transformer.dtype), torch.zeros(len(prefix), device=device), k_shape, k_shape, dit_cache, True)
        decode(prefix, k_shape, k_shape, vae_cache)

    timesteps = torch.linspace(num_train_timesteps, 0, num_inference_steps + 1, device=device)
    clean_latents = torch.zeros_like(latents)
    context_ids = None
    for block_index in range(num_blocks):
        k_shape = k_shape + block_length
        block_slice = slice(block_index * block_length, (block_index + 1) * block_length)
        x = latents[:, block_slice].flatten(0, 1).clone()
        for t, t_next in zip(timesteps[:-1], timesteps[1:]):
            timestep = torch.full((len(x),), float(t), device=device)
            if block_index == 0:
                timestep[repaint_mask] = 0
                x[repaint_mask] = repaint_latents[repaint_mask]
            x_in = x.to(transformer.dtype)
            velocity_cond = dit(x_in, timestep, k_shape, q_shape, dit_cache).float()
            velocity_uncond = dit(x_in, timestep, q_shape, q_shape).float()
            scale = first_block_guidance if block_index == 0 else guidance_scale
            velocity = velocity_uncond + scale * (velocity_cond - velocity_uncond)
            x = x - (t - t_next) / num_train_timesteps * velocity
            if block_index == 0:
                x[repaint_mask] = repaint_latents[repaint_mask]

        clean_latents[:, block_slice] = x.view(batch_size, block_length, -1)
        logits = decode(x, k_shape, q_shape, vae_cache).view(batch_size, tokens_per_block, -1)
        block_ids = greedy_tokens(logits, context_ids, repetition_penalty)
        context_ids = block_ids if context_ids is None else torch.cat([context_ids, block_ids], dim=1)
        dit(x.to(transformer.dtype), torch.zeros(len(x), device=device), k_shape, q_shape, dit_cache, True)

    sequences = torch.stack([context_ids[i, trim : trim + gen_length] for i, trim in enumerate(trim_counts)])
    return sequences, clean_latents, counts
