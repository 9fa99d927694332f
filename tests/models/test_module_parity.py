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

"""The models reproduce the official module outputs recorded in both reference fixtures (fp32)."""

import os

import pytest
import torch

from cola_diffusers import block_causal_mask
from cola_diffusers.loaders.official_checkpoint import load_official_transformer, load_official_vae
from cola_diffusers.models.transformers.transformer_cola import ColaModulationTable

from ..conftest import relative_error


TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def transformer(reference):
    return load_official_transformer(os.path.join(reference.folder, "cola_dlm", "cola_dit"))


@pytest.fixture(scope="module")
def vae(reference):
    return load_official_vae(os.path.join(reference.folder, "cola_dlm", "cola_vae"))


def right_pad(sequences):
    """Stacks variable-length sequences into a batch; returns it with the validity mask."""
    length = max(len(sequence) for sequence in sequences)
    batch = sequences[0].new_zeros((len(sequences), length, *sequences[0].shape[1:]))
    valid = torch.zeros(len(sequences), length, dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = sequence
        valid[row, : len(sequence)] = True
    return batch, valid


def unpad(batch, lengths):
    return torch.cat([row[:length] for row, length in zip(batch, lengths)])


@torch.no_grad()
def test_vae_encode_matches_reference(vae, reference):
    traces, lengths = reference.traces, reference.modules["vae_encode"]["lengths"]
    input_ids, valid = right_pad([traces[f"vae_encode.input_ids.{i}"] for i in range(len(lengths))])
    posterior = vae.encode(input_ids, valid.long()).latent_dist
    for i, length in enumerate(lengths):
        assert relative_error(posterior.mean[i, :length], traces[f"vae_encode.mean.{i}"]) < TOLERANCE
        assert relative_error(posterior.logvar[i, :length], traces[f"vae_encode.logvar.{i}"]) < TOLERANCE


@torch.no_grad()
def test_vae_decode_matches_reference(vae, reference):
    traces, lengths = reference.traces, reference.modules["vae_decode"]["lengths"]
    latents, valid = right_pad(list(traces["vae_decode.z"].split(lengths)))
    positions = torch.arange(latents.shape[1]).expand(len(lengths), -1)
    mask = block_causal_mask(positions, positions, valid, vae.config.block_size)
    logits = vae.decode(latents, attention_mask=mask).logits
    assert relative_error(unpad(logits, lengths), traces["vae_decode.logits"]) < TOLERANCE


@torch.no_grad()
def test_transformer_full_pass_matches_reference(transformer, reference):
    traces, lengths = reference.traces, reference.modules["dit_full"]["lengths"]
    hidden_states, valid = right_pad(list(traces["dit_full.x"].split(lengths)))
    timestep, _ = right_pad(list(traces["dit_full.t"].split(lengths)))
    positions = torch.arange(hidden_states.shape[1]).expand(len(lengths), -1)
    mask = block_causal_mask(positions, positions, valid, transformer.config.block_size)
    output = transformer(hidden_states, timestep, attention_mask=mask).sample
    assert relative_error(unpad(output, lengths), traces["dit_full.out"]) < TOLERANCE


@torch.no_grad()
def test_transformer_cached_passes_match_reference(transformer, reference):
    traces, prefix_lengths = reference.traces, reference.modules["dit_cached"]["prefix_lengths"]
    block, batch, channels = transformer.config.block_size, len(prefix_lengths), transformer.config.in_channels
    max_prefix = max(prefix_lengths)
    prefixes = traces["dit_cached.prefix"].split(prefix_lengths)
    # Left-pad the prefixes so that every block lands in the same cache slots.
    pad = torch.tensor([max_prefix - length for length in prefix_lengths])
    positions = torch.arange(max_prefix + block) - pad[:, None]
    valid = positions >= 0
    prefix = torch.zeros(batch, max_prefix, channels)
    for row, sequence in enumerate(prefixes):
        prefix[row, pad[row] :] = sequence

    slots = torch.arange(max_prefix + block)
    cache = transformer.make_kv_cache(batch, max_prefix + block)
    prefix_valid = valid & (slots < max_prefix)
    prefix_mask = block_causal_mask(positions[:, :max_prefix], positions, prefix_valid, block, slots[:max_prefix])
    transformer(prefix, torch.zeros(batch), positions[:, :max_prefix], prefix_mask, cache, slots[:max_prefix])

    query = traces["dit_cached.q"].view(batch, block, channels)
    timestep = traces["dit_cached.t"].view(batch, block)
    block_slots = slots[max_prefix:]
    cond_mask = block_causal_mask(positions[:, max_prefix:], positions, valid, block, block_slots)
    cond = transformer(query, timestep, positions[:, max_prefix:], cond_mask, cache, block_slots).sample
    uncond = transformer(query, timestep).sample
    assert relative_error(cond.flatten(0, 1), traces["dit_cached.cond"]) < TOLERANCE
    assert relative_error(uncond.flatten(0, 1), traces["dit_cached.uncond"]) < TOLERANCE

    # Both branches in one pass over the same rows, as the sampler runs them: the block alone (positions from 0)
    # writes its keys into scratch slots past the cache, the only keys its queries see.
    slots = torch.arange(max_prefix + 2 * block)
    cache = transformer.make_kv_cache(batch, max_prefix + 2 * block)
    prefix_mask = block_causal_mask(positions[:, :max_prefix], positions, prefix_valid, block, slots[:max_prefix])
    prefix_mask = torch.nn.functional.pad(prefix_mask, (0, block))
    transformer(prefix, torch.zeros(batch), positions[:, :max_prefix], prefix_mask, cache, slots[:max_prefix])
    own_positions = torch.arange(block).expand(batch, -1)
    own_mask = (slots >= max_prefix + block).expand(batch, 1, block, -1)
    both = transformer(
        torch.cat([query, query], dim=1),
        torch.cat([timestep, timestep], dim=1),
        torch.cat([positions[:, max_prefix:], own_positions], dim=1),
        torch.cat([torch.nn.functional.pad(cond_mask, (0, block)), own_mask], dim=2),
        cache,
        slots[max_prefix:],
    ).sample
    assert relative_error(both[:, :block].flatten(0, 1), traces["dit_cached.cond"]) < TOLERANCE
    assert relative_error(both[:, block:].flatten(0, 1), traces["dit_cached.uncond"]) < TOLERANCE


def test_timestep_is_rounded_to_bfloat16(transformer):
    hidden_states = torch.randn(1, transformer.config.block_size, transformer.config.in_channels)
    with torch.no_grad():
        at_875 = transformer(hidden_states, torch.tensor([875.0])).sample
        at_876 = transformer(hidden_states, torch.tensor([876.0])).sample
        at_880 = transformer(hidden_states, torch.tensor([880.0])).sample
    assert torch.equal(at_875, at_876)
    assert not torch.equal(at_876, at_880)


def test_precomputed_modulation_equals_the_timestep_path(transformer):
    shape = (3, transformer.config.block_size, transformer.config.in_channels)
    hidden_states = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([1000.0, 437.5, 0.0])
    with torch.no_grad():
        for timestep in timesteps:
            from_timestep = transformer(hidden_states, timestep.reshape(1)).sample
            per_sample = transformer(hidden_states, timestep.expand(3)).sample
            modulation = ColaModulationTable(timesteps)
            precomputed = transformer(hidden_states, timestep.reshape(1), modulation=modulation).sample
            # Equal up to the summation order of a batched matmul.
            torch.testing.assert_close(precomputed, from_timestep, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(per_sample, from_timestep, rtol=1e-5, atol=1e-5)
