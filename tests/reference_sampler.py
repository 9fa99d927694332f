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
A literal re-implementation of the official sampler, one prompt at a time and without any cache.

Every conditional pass reruns the DiT over the whole clean context (at t = 0) followed by the current block; the
unconditional pass runs the block alone; the decoder reruns over all clean latents. Block-causal attention makes
this equal to the cached computation, so it checks the pipeline's caches, masks, padding and repaint logic with
none of that machinery.
"""

import torch


def classifier_free_guidance(cond, uncond, scale):
    """The official guidance: `uncond + scale · (cond - uncond)`."""
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def reference_generate(
    pipe,
    prompt,
    noise,
    num_inference_steps,
    guidance_scale,
    repetition_penalty,
    pad_token_id,
    scheduler=None,
    guidance=classifier_free_guidance,
):
    """
    Returns `(clean_latents, sampled_tokens, num_trimmed_tokens)` for one prompt; `noise` is `(blocks, L, C)`.

    By default every block takes the official Euler steps on `linspace(1000, 0, steps + 1)`. A diffusers `scheduler`
    (a fresh instance, not the pipeline's) replaces them: `set_timesteps(num_inference_steps)` per block, then one
    `step` per entry of its `timesteps`. `guidance(cond, uncond, scale)` combines the velocities of the two passes.
    """
    transformer, vae = pipe.transformer, pipe.vae
    block_length, patch_size = transformer.config.block_size, vae.config.patch_size
    ids = pipe.tokenizer(prompt)["input_ids"]
    chunk = block_length * patch_size
    padded = ids + [pad_token_id] * (-len(ids) % chunk)
    z = vae.normalize_latents(vae.encode(torch.tensor([padded])).latent_dist.mode())[0]
    num_latents = -(-len(ids) // patch_size)
    prefix_length = num_latents // block_length * block_length
    num_repainted = num_latents - prefix_length

    timesteps = torch.linspace(1000, 0, num_inference_steps + 1)
    context = z[:prefix_length]
    sampled = []
    for block_index, block_noise in enumerate(noise):
        x = block_noise.clone()
        num_pinned = num_repainted if block_index == 0 else 0
        pinned = torch.arange(block_length) < num_pinned
        x[pinned] = z[prefix_length : prefix_length + num_pinned]
        scale = guidance_scale if (prefix_length > 0 or block_index > 0) else 1.0
        if scheduler is not None:
            scheduler.set_timesteps(num_inference_steps)
        for step_index, t in enumerate(timesteps[:-1] if scheduler is None else scheduler.timesteps):
            t_block = torch.where(pinned, 0.0, t.float())
            sequence = torch.cat([context, x])[None]
            t_sequence = torch.cat([torch.zeros(len(context)), t_block])[None]
            cond = transformer(sequence, t_sequence).sample[0, -block_length:]
            uncond = transformer(x[None], t_block[None]).sample[0]
            velocity = guidance(cond, uncond, scale)
            if scheduler is None:
                x = x - (t - timesteps[step_index + 1]) / 1000 * velocity
            else:
                x = scheduler.step(velocity[None], t, x[None]).prev_sample[0]
            x[pinned] = z[prefix_length : prefix_length + num_pinned]
        context = torch.cat([context, x])
        logits = vae.decode(context[None]).logits[0, -chunk:]
        if sampled and repetition_penalty != 1.0:
            history = torch.tensor(sampled)
            score = logits[:, history]
            logits[:, history] = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        sampled += logits.argmax(-1).tolist()
    return context[prefix_length:], sampled, len(ids) - prefix_length * patch_size
