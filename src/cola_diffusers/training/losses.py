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

"""Training objectives of Cola-DLM: Stage 1 (Text VAE) and Stage 2 (flow-matching prior over VAE latents)."""

import torch
import torch.nn.functional as F

from ..models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ..models.autoencoders.vae_cola import ColaTextLatentDistribution
from ..models.transformers.transformer_cola import ColaTransformer1DModel


def vae_loss(
    vae: AutoencoderKLColaText,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    *,
    kl_weight: float = 1e-4,
    mask_rate: float = 0.15,
    masked_token_weight: float = 1.0,
    sample_posterior: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """
    Stage-1 loss: token reconstruction cross-entropy + `kl_weight` · KL(q(z|x) || N(0, I)) + `masked_token_weight` ·
    BERT-style masked-token cross-entropy.

    A `mask_rate` share of the real tokens is replaced by the mask token (the embedding's extra row, id
    `vocab_size`) before encoding; the decoder must reconstruct every original token from a posterior sample (the
    posterior mean when `sample_posterior` is False). Padding (`attention_mask == 0`) is excluded everywhere.

    Returns:
        `dict` with `loss` and its parts `reconstruction`, `kl`, `masked_tokens`.
    """
    valid = attention_mask.bool()
    masked = (torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < mask_rate) & valid
    encoder_input = input_ids.masked_fill(masked, vae.config.vocab_size)

    posterior = vae.encode(encoder_input, attention_mask).latent_dist
    latents = posterior.sample(generator) if sample_posterior else posterior.mode()
    logits = vae.decode(latents).logits
    token_loss = F.cross_entropy(logits.flatten(0, 1).float(), input_ids.flatten(), reduction="none").view_as(
        input_ids
    )

    latent_valid = valid.unflatten(1, (-1, vae.config.patch_size)).any(-1)
    reconstruction = token_loss[valid].mean()
    masked_tokens = token_loss[masked].mean() if masked.any() else token_loss.new_zeros(())
    kl = posterior.kl()[latent_valid].mean()
    loss = reconstruction + kl_weight * kl + masked_token_weight * masked_tokens
    return {"loss": loss, "reconstruction": reconstruction, "kl": kl, "masked_tokens": masked_tokens}


def vae_finetune_loss(
    vae: AutoencoderKLColaText, input_ids: torch.LongTensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """
    The official VAE special-token fine-tune's loss: the token cross-entropy of decoding the posterior mean, as the
    pipeline decodes (normalised latents), over the tokens `attention_mask` marks. Only the decoder's output layer
    is trained, so the encoder runs without gradients.
    """
    with torch.no_grad():
        latents = vae.normalize_latents(vae.encode(input_ids, attention_mask).latent_dist.mode())
    logits = vae.decode(latents).logits
    token_loss = F.cross_entropy(logits.flatten(0, 1).float(), input_ids.flatten(), reduction="none")
    return token_loss.view_as(input_ids)[attention_mask.bool()].mean()


def two_block_layout_mask(
    position_ids: torch.LongTensor, key_valid: torch.Tensor, block_size: int | torch.LongTensor
) -> torch.Tensor:
    """
    Attention mask of the Stage-2 "2L" layout: the sequence holds its `L` clean latents followed by the same `L`
    positions noised. Clean latents attend block-causally to clean latents; noisy block `b` attends to the clean
    blocks before `b` and to itself.

    Args:
        position_ids (`torch.LongTensor` of shape `(B, L)`): Positions of the latents.
        key_valid (`torch.BoolTensor` of shape `(B, L)`): False for padding.
        block_size (`int` or `torch.LongTensor` of shape `(B,)`): Latents per block, or each sample's.

    Returns:
        `torch.BoolTensor` of shape `(B, 1, 2L, 2L)`.
    """
    block = torch.div(position_ids, per_sample(block_size, position_ids), rounding_mode="floor")
    query_block, key_block = block[:, :, None], block[:, None, :]
    valid = key_valid[:, None, :]
    clean_to_clean = (key_block <= query_block) & valid
    noisy_to_clean = (key_block < query_block) & valid
    noisy_to_noisy = (key_block == query_block) & valid
    clean_to_noisy = torch.zeros_like(clean_to_clean)
    eye = torch.eye(position_ids.shape[1], dtype=torch.bool, device=position_ids.device)
    top = torch.cat([clean_to_clean | eye, clean_to_noisy], dim=-1)
    bottom = torch.cat([noisy_to_clean, noisy_to_noisy | eye], dim=-1)
    return torch.cat([top, bottom], dim=1).unsqueeze(1)


def per_sample(block_size: int | torch.LongTensor, position_ids: torch.LongTensor) -> torch.LongTensor:
    """The block size of every row of `position_ids` `(B, L)`, shaped `(B, 1)` to broadcast over positions."""
    sizes = torch.as_tensor(block_size, device=position_ids.device)
    return sizes.expand(position_ids.shape[0]).view(-1, 1)


def sample_logit_normal(shape, mean: float = 0.0, std: float = 1.0, generator=None, device=None) -> torch.Tensor:
    """σ = sigmoid(N(mean, std²)): flow-matching times concentrated in the middle of the path."""
    return torch.sigmoid(mean + std * torch.randn(shape, generator=generator, device=device))


def prior_loss(
    transformer: ColaTransformer1DModel,
    vae: AutoencoderKLColaText,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    block_size: int | torch.LongTensor,
    *,
    num_train_timesteps: int = 1000,
    prompt_boundary_rate: float = 0.5,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    noise_level_per: str = "block",
    sample_posterior: bool = False,
    detach_context: bool = False,
    posterior: ColaTextLatentDistribution | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Stage-2 flow-matching loss of the DiT on the "2L" layout.

    The VAE (frozen or trained, as the caller decides) encodes the tokens; its posterior mean (or, with
    `sample_posterior`, a sample), normalised, is `x_0`. Every block (or, with `noise_level_per="sample"`, every
    sample) gets a logit-normal `σ`; the noisy copy is `x_σ = (1 - σ) x_0 + σ ε` and the target velocity `ε - x_0`.
    With probability `prompt_boundary_rate` a block starts with a random number of clean positions held at
    timestep 0 (a prompt ending inside the block, as the first generated block sees at inference); those positions
    and padding are excluded from the loss. `block_size` is one size or each sample's, `(B,)`. With
    `detach_context` (a VAE trained jointly) no gradient flows through the clean context, `sg(z_0^(<b))`; a caller
    that has encoded `input_ids` already passes the VAE's `posterior`.

    Returns:
        The mean squared velocity error over the noisy, non-pinned, non-padding positions.
    """
    device = input_ids.device
    if posterior is None:
        posterior = vae.encode(input_ids, attention_mask).latent_dist
    clean = vae.normalize_latents(posterior.sample(generator) if sample_posterior else posterior.mode())
    batch_size, num_latents, _ = clean.shape
    valid = attention_mask.bool().unflatten(1, (-1, vae.config.patch_size)).any(-1)
    position_ids = torch.arange(num_latents, device=device).expand(batch_size, -1)
    sizes = per_sample(block_size, position_ids)
    block_index = torch.div(position_ids, sizes, rounding_mode="floor")
    num_blocks = -(-num_latents // int(sizes.min()))

    num_levels = 1 if noise_level_per == "sample" else num_blocks
    sigma = sample_logit_normal((batch_size, num_levels), logit_mean, logit_std, generator, device)
    sigma = sigma.expand(-1, num_blocks).gather(1, block_index)
    boundary = torch.rand((batch_size, num_blocks), generator=generator, device=device).mul(sizes).floor().long()
    use_boundary = torch.rand((batch_size, num_blocks), generator=generator, device=device) < prompt_boundary_rate
    pinned = (position_ids % sizes) < (boundary * use_boundary).gather(1, block_index)
    sigma = sigma.masked_fill(pinned, 0.0)

    noise = torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype)
    return velocity_error(
        transformer,
        clean,
        noise,
        sigma,
        valid,
        weight=valid & ~pinned,
        block_size=sizes[:, 0],
        num_train_timesteps=num_train_timesteps,
        detach_context=detach_context,
    )


def joint_prior_loss(
    transformer: ColaTransformer1DModel,
    vae: AutoencoderKLColaText,
    reference_vae: AutoencoderKLColaText,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    block_size: int | torch.LongTensor,
    *,
    vae_weight: float = 1.0,
    entropy_weight: float = 1e-4,
    reference_weight: float = 1.0,
    mask_rate: float = 0.15,
    masked_token_weight: float = 1.0,
    **prior_options,
) -> dict[str, torch.Tensor]:
    """
    The paper's joint Stage 2 (Eq. 2.2.3), VAE and DiT trained together:

        vae_weight · (reconstruction + entropy_weight · E_q[log q] + masked_token_weight · L_mask)
        + L_FM + reference_weight · KL(q(z|x) || q_ref(z|x))

    `L_FM` is [`prior_loss`] with gradients into the encoder through the noisy latents and targets but not through
    the clean context; `q_ref` is the frozen Stage-1 encoder of `reference_vae`, which keeps the latents from
    drifting. `prior_options` go to `prior_loss`.

    Returns:
        `dict` with `loss` and its parts `flow_matching`, `reconstruction`, `negative_entropy`, `masked_tokens`,
        `reference_kl`.
    """
    parts = vae_loss(vae, input_ids, attention_mask, mask_rate=mask_rate, masked_token_weight=masked_token_weight)
    posterior = vae.encode(input_ids, attention_mask).latent_dist
    with torch.no_grad():
        reference = reference_vae.encode(input_ids, attention_mask).latent_dist
    latent_valid = attention_mask.bool().unflatten(1, (-1, vae.config.patch_size)).any(-1)
    negative_entropy = posterior.negative_entropy()[latent_valid].mean()
    reference_kl = posterior.kl(reference)[latent_valid].mean()
    flow_matching = prior_loss(
        transformer,
        vae,
        input_ids,
        attention_mask,
        block_size,
        detach_context=True,
        posterior=posterior,
        **prior_options,
    )
    vae_terms = (
        parts["reconstruction"] + entropy_weight * negative_entropy + masked_token_weight * parts["masked_tokens"]
    )
    loss = vae_weight * vae_terms + flow_matching + reference_weight * reference_kl
    return {
        "loss": loss,
        "flow_matching": flow_matching,
        "reconstruction": parts["reconstruction"],
        "negative_entropy": negative_entropy,
        "masked_tokens": parts["masked_tokens"],
        "reference_kl": reference_kl,
    }


def velocity_error(
    transformer: ColaTransformer1DModel,
    clean: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    valid: torch.Tensor,
    *,
    weight: torch.Tensor,
    block_size: int | torch.LongTensor,
    num_train_timesteps: int = 1000,
    detach_context: bool = False,
) -> torch.Tensor:
    """
    The DiT's flow-matching error on the "2L" layout: the clean latents at timestep 0, then their noisy copy
    `x_σ = (1 - σ) x_0 + σ ε` at timestep `σ · num_train_timesteps`, whose velocity should be `ε - x_0`. With
    `detach_context` no gradient flows through the clean copy.

    Args:
        clean (`torch.Tensor` of shape `(B, L, D)`): `x_0`, from position 0 on.
        noise (`torch.Tensor` of shape `(B, L, D)`): `ε`.
        sigma (`torch.Tensor` of shape `(B, L)`): The noise level of every position; 0 holds a position clean.
        valid (`torch.BoolTensor` of shape `(B, L)`): False for padding, which no position attends to.
        weight (`torch.BoolTensor` of shape `(B, L)`): The positions whose error is averaged.
        block_size (`int` or `torch.LongTensor` of shape `(B,)`): Latents per block of the block-causal mask.

    Returns:
        The mean squared velocity error over `weight`.
    """
    noisy = (1 - sigma[..., None]) * clean + sigma[..., None] * noise
    context = clean.detach() if detach_context else clean
    return layout_velocity_error(
        transformer,
        context,
        noisy,
        sigma * num_train_timesteps,
        noise - clean,
        valid,
        weight=weight,
        block_size=block_size,
    )


def layout_velocity_error(
    transformer: ColaTransformer1DModel,
    clean: torch.Tensor,
    noisy: torch.Tensor,
    timestep: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    weight: torch.Tensor,
    block_size: int | torch.LongTensor,
) -> torch.Tensor:
    """
    The DiT's error on the "2L" layout given its noisy copy: `clean` at timestep 0, then `noisy` at `timestep`; the
    squared error of the noisy copy's velocity against `target`, averaged over the latent dimension and over `weight`.

    Args:
        clean (`torch.Tensor` of shape `(B, L, D)`): The clean copy.
        noisy (`torch.Tensor` of shape `(B, L, D)`): The noisy copy.
        timestep (`torch.Tensor` of shape `(B, L)`): The timesteps of the noisy copy.
        target (`torch.Tensor` of shape `(B, L, D)`): The velocity the noisy copy should predict.
        valid (`torch.BoolTensor` of shape `(B, L)`): False for padding, which no position attends to.
        weight (`torch.Tensor` of shape `(B, L)`): The positions whose error is averaged.
        block_size (`int` or `torch.LongTensor` of shape `(B,)`): Latents per block of the block-causal mask.
    """
    batch_size, num_latents, _ = clean.shape
    position_ids = torch.arange(num_latents, device=clean.device).expand(batch_size, -1)
    hidden_states = torch.cat([clean, noisy], dim=1).to(transformer.dtype)
    timestep = torch.cat([torch.zeros_like(timestep), timestep], dim=1)
    positions = torch.cat([position_ids, position_ids], dim=1)
    mask = two_block_layout_mask(position_ids, valid, block_size)
    velocity = transformer(hidden_states, timestep, positions, mask).sample[:, num_latents:]

    weight = weight.float()
    squared_error = (velocity.float() - target.float()).pow(2).mean(-1)
    return (squared_error * weight).sum() / weight.sum().clamp(min=1.0)


def distillation_loss(
    transformer: ColaTransformer1DModel,
    latents: torch.Tensor,
    noise: torch.Tensor,
    generated: torch.Tensor,
    valid: torch.Tensor,
    block_size: int,
    *,
    sigmas: torch.Tensor,
    num_train_timesteps: int = 1000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Reflow loss of a few-step student on a guided teacher's couplings (noise `ε` → the teacher's latents `x_0`).

    Every block draws its noise level from the student's own schedule `sigmas`; on the straight path
    `x_σ = (1 - σ) x_0 + σ ε` the target velocity is `ε - x_0`, so Euler steps at those levels land on the
    teacher's result. The prompt's latents (prefix and repainted) stay clean, as at inference.

    Args:
        latents (`torch.Tensor` of shape `(B, L, D)`): Each prompt's prefix latents followed by the teacher's blocks.
        noise (`torch.Tensor` of shape `(B, L, D)`): The noise the teacher started every block from.
        generated (`torch.BoolTensor` of shape `(B, L)`): The positions the teacher generated.
        valid (`torch.BoolTensor` of shape `(B, L)`): False for padding.
        sigmas (`torch.Tensor` of shape `(K,)`): The noise levels of the student's steps.

    Returns:
        The mean squared velocity error over the generated positions.
    """
    batch_size, num_latents, _ = latents.shape
    block_index = torch.arange(num_latents, device=latents.device).expand(batch_size, -1) // block_size
    num_blocks = -(-num_latents // block_size)
    choice = torch.randint(0, len(sigmas), (batch_size, num_blocks), generator=generator, device=latents.device)
    sigma = sigmas.to(latents.device)[choice].gather(1, block_index).masked_fill(~generated, 0.0)
    return velocity_error(
        transformer,
        latents,
        noise,
        sigma,
        valid,
        weight=generated & valid,
        block_size=block_size,
        num_train_timesteps=num_train_timesteps,
    )
