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
Supervised fine-tuning data of Cola-DLM: conversations rendered into token ids and prompt/response roles as the
official SFT script renders them (the same `text` and `chatml` formats as `generation.chat`), and padded batches.
"""

from dataclasses import dataclass

import torch

from ..generation.chat import CHAT_FORMATS
from ..generation.stopping import chat_stop_token_id
from ..loaders.tokenizer import PAD_TOKEN
from ..models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ..models.transformers.transformer_cola import ColaTransformer1DModel
from .config import SFT_CHAT_FORMATS
from .losses import layout_velocity_error, per_sample, sample_logit_normal


ROLES = ("system", "user", "assistant")
IM_START_TOKEN = "<|im_start|>"


@dataclass
class SFTBatch:
    """
    Rendered conversations, padded to one length.

    Args:
        input_ids (`torch.LongTensor` of shape `(B, max_length)`): The token ids.
        response (`torch.BoolTensor` of shape `(B, max_length)`): The response tokens, padding included (noised).
        loss_mask (`torch.BoolTensor` of shape `(B, max_length)`): The response tokens before the padding.
        indices (`list[int]`): The conversation each row comes from; those left with no response token after
            truncation are skipped.
    """

    input_ids: torch.LongTensor
    response: torch.BoolTensor
    loss_mask: torch.BoolTensor
    indices: list[int]


def _encode(tokenizer, text: str) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(ids, "ids", ids))


def _token_id(tokenizer, token: str, chat_format: str) -> int:
    ids = _encode(tokenizer, token)
    if len(ids) != 1:
        raise ValueError(f"`chat_format={chat_format!r}` needs a tokenizer with the token {token!r} as one token.")
    return ids[0]


def _text(content) -> str:
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def _check_format(chat_format: str):
    if chat_format not in SFT_CHAT_FORMATS:
        raise ValueError(f"`chat_format` must be one of {list(SFT_CHAT_FORMATS)}, got {chat_format!r}.")


def stop_token(tokenizer, chat_format: str, stop_token_id: int | None = None) -> int:
    """The id of the token that ends an assistant turn: `stop_token_id`, else `■` (`text`) or `<|im_end|>`."""
    _check_format(chat_format)
    if stop_token_id is not None:
        return stop_token_id
    token_id = chat_stop_token_id(tokenizer, CHAT_FORMATS[chat_format])
    if token_id is None:
        token = CHAT_FORMATS[chat_format].stop_token
        raise ValueError(
            f"`chat_format={chat_format!r}` needs a tokenizer with the token {token!r} as one token, or a "
            "`stop_token_id`."
        )
    return token_id


def render_conversation(
    tokenizer, messages: list[dict], chat_format: str, *, stop_token_id: int | None = None
) -> tuple[list[int], list[bool]]:
    """
    Renders a conversation into token ids and their roles (True for response tokens), as the official SFT script
    does. Every segment is tokenised on its own, without special tokens; a leading system message is joined to the
    next message as `system + "\\n\\n" + content`. Content may be a string or a list of `{"type", "text"}` parts.

    - `text`: a user (or later system) message is the prompt `User: {content}\\n`; an assistant message is the
      prompt `Assistant: ` followed by the response `{content}`, the stop token and `\\n`.
    - `chatml`: every message is `<|im_start|>{role}\\n{content}<|im_end|>\\n`, all prompt except an assistant's
      content and `<|im_end|>`. An assistant's list content is tokenised part by part, parts of type `text` or
      `python` being response and the others (tool output) prompt, as in the official script.

    Args:
        tokenizer: The tokenizer, with `■` (`text`) or `<|im_start|>` and `<|im_end|>` (`chatml`) as single tokens.
        messages (`list[dict]`): The messages, each with `role` (`system`, `user` or `assistant`) and `content`.
        chat_format (`str`): `"text"` or `"chatml"`.
        stop_token_id (`int`, *optional*): The token that ends an assistant turn, when it is not the format's (`■`
            for `text`, `<|im_end|>` for `chatml`).

    Returns:
        `tuple` of the token ids and their roles.
    """
    _check_format(chat_format)
    for index, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise ValueError(f"`messages[{index}]['role']` must be one of {list(ROLES)}, got {message.get('role')!r}.")
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError("`messages` has no assistant turn: there is no response to train on.")
    stop = stop_token(tokenizer, chat_format, stop_token_id)

    messages = list(messages)
    if messages[0]["role"] == "system":
        system, first = messages[0], messages[1]
        merged = {"role": first["role"], "content": _text(system["content"]) + "\n\n" + _text(first["content"])}
        messages = [merged, *messages[2:]]
    ids, roles = [], []

    def add(token_ids: list[int], is_response: bool):
        ids.extend(token_ids)
        roles.extend([is_response] * len(token_ids))

    if chat_format == "text":
        for message in messages:
            content = _text(message["content"])
            if message["role"] == "assistant":
                add(_encode(tokenizer, "Assistant: "), False)
                add(_encode(tokenizer, content), True)
                add([stop], True)
                add(_encode(tokenizer, "\n"), True)
            else:
                add(_encode(tokenizer, f"User: {content}\n"), False)
    else:
        im_start = _token_id(tokenizer, IM_START_TOKEN, chat_format)
        for message in messages:
            is_assistant = message["role"] == "assistant"
            add([im_start], False)
            add(_encode(tokenizer, f"{message['role']}\n"), False)
            content = message["content"]
            if is_assistant and not isinstance(content, str):
                for part in content:
                    add(_encode(tokenizer, part["text"]), part.get("type") in ("text", "python"))
            else:
                add(_encode(tokenizer, _text(content)), is_assistant)
            add([stop], is_assistant)
            add(_encode(tokenizer, "\n"), False)
    return ids, roles


def pad_token(tokenizer, chat_format: str, *, pad_with_stop: bool = True, stop_token_id: int | None = None) -> int:
    """
    The token that pads rendered conversations: the stop token for `text`; for `chatml`, `<|im_end|>` when
    `pad_with_stop`, else `<|pad|>`.
    """
    if chat_format == "chatml" and not pad_with_stop:
        return _token_id(tokenizer, PAD_TOKEN, chat_format)
    return stop_token(tokenizer, chat_format, stop_token_id)


def build_sft_batch(
    tokenizer,
    conversations: list[dict | list[dict]],
    chat_format: str,
    max_length: int = 512,
    *,
    pad_with_stop: bool = True,
    stop_token_id: int | None = None,
) -> SFTBatch:
    """
    Renders conversations with `render_conversation`, truncates them to `max_length` tokens and pads them to exactly
    `max_length`, as the official SFT script does. Padding counts as response (it is noised, so the model learns to
    keep emitting the pad token after a turn) but is not trained on. Conversations left without a response token
    after truncation are skipped.

    Args:
        conversations (`list`): Conversations, each `{"messages": [...]}` or the list of messages itself.
        chat_format (`str`): `"text"` or `"chatml"`.
        max_length (`int`, defaults to 512): Tokens per row; a multiple of the VAE's `patch_size`.
        pad_with_stop (`bool`, defaults to True): For `chatml`, pad with `<|im_end|>` rather than `<|pad|>`; `text`
            always pads with its stop token.
        stop_token_id (`int`, *optional*): The token that ends an assistant turn, when it is not the format's.

    Returns:
        [`SFTBatch`].
    """
    pad = pad_token(tokenizer, chat_format, pad_with_stop=pad_with_stop, stop_token_id=stop_token_id)
    rows, indices = [], []
    for index, conversation in enumerate(conversations):
        messages = conversation["messages"] if isinstance(conversation, dict) else conversation
        try:
            ids, roles = render_conversation(tokenizer, messages, chat_format, stop_token_id=stop_token_id)
        except ValueError as error:
            raise ValueError(f"`conversations[{index}]`: {error}") from error
        ids, roles = ids[:max_length], roles[:max_length]
        if any(roles):
            rows.append((ids, roles))
            indices.append(index)

    input_ids = torch.full((len(rows), max_length), pad, dtype=torch.long)
    response = torch.ones((len(rows), max_length), dtype=torch.bool)
    loss_mask = torch.zeros((len(rows), max_length), dtype=torch.bool)
    for row, (ids, roles) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        response[row, : len(roles)] = torch.tensor(roles, dtype=torch.bool)
        loss_mask[row, : len(roles)] = torch.tensor(roles, dtype=torch.bool)
    return SFTBatch(input_ids=input_ids, response=response, loss_mask=loss_mask, indices=indices)


def sft_noisy_copy(
    clean: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    response: torch.Tensor,
    loss_mask: torch.Tensor,
    block_size: int | torch.LongTensor,
    *,
    num_train_timesteps: int = 1000,
    boundary_mode: str = "token",
    loss_mode: str = "sft",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The noisy copy of the SFT "2L" layout, by the official turn-boundary rules. A response latent is noised,
    `x_σ = (1 - σ) x_0 + σ ε` at timestep `σ · T`, and trained on. A prompt latent that would leak the next turn is
    pure noise `ε` at timestep `σ · T` (not `T`): with `boundary_mode="token"` (the official default), one after a
    response latent of its block; with `"block"` (the official legacy rule), every prompt latent of a block that
    starts with a response latent. Every other prompt latent stays clean at timestep 0, or, with
    `loss_mode="all_token"`, is noised and trained on like a response latent.

    Args:
        clean (`torch.Tensor` of shape `(B, L, D)`): `x_0`.
        noise (`torch.Tensor` of shape `(B, L, D)`): `ε`.
        sigma (`torch.Tensor` of shape `(B,)`): The noise level of every sample.
        response (`torch.BoolTensor` of shape `(B, L)`): The response latents, padding included.
        loss_mask (`torch.BoolTensor` of shape `(B, L)`): The response latents that are trained on.
        block_size (`int` or `torch.LongTensor` of shape `(B,)`): Latents per block, or each sample's.

    Returns:
        `tuple` of the noisy copy `(B, L, D)`, its timesteps `(B, L)` and the loss weights `(B, L)` (float).
    """
    batch_size, num_latents = response.shape
    position_ids = torch.arange(num_latents, device=response.device).expand(batch_size, -1)
    sizes = per_sample(block_size, position_ids)
    block_start = torch.div(position_ids, sizes, rounding_mode="floor") * sizes
    # Response latents so far in the block: the running count, less the count before the block starts.
    count = response.long().cumsum(1)
    before = count.gather(1, (block_start - 1).clamp(min=0)).masked_fill(block_start == 0, 0)
    if boundary_mode == "token":
        leaking = count > before
    elif boundary_mode == "block":
        leaking = response.gather(1, block_start)
    else:
        raise ValueError(f'`boundary_mode` must be "token" or "block", got {boundary_mode!r}.')
    if loss_mode not in ("sft", "all_token"):
        raise ValueError(f'`loss_mode` must be "sft" or "all_token", got {loss_mode!r}.')
    prompt_noise = leaking & ~response
    context = ~response & ~leaking
    held_clean = context if loss_mode == "sft" else torch.zeros_like(context)

    sigma = sigma[:, None].expand(-1, num_latents)
    noisy = (1 - sigma[..., None]) * clean + sigma[..., None] * noise
    noisy = torch.where(prompt_noise[..., None], noise, noisy)
    noisy = torch.where(held_clean[..., None], clean, noisy)
    timestep = (sigma * num_train_timesteps).masked_fill(held_clean, 0.0)
    trained = response & loss_mask if loss_mode == "sft" else (response & loss_mask) | context
    return noisy, timestep, trained.float()


def sft_loss(
    transformer: ColaTransformer1DModel,
    vae: AutoencoderKLColaText,
    input_ids: torch.LongTensor,
    response: torch.Tensor,
    loss_mask: torch.Tensor,
    block_size: int | torch.LongTensor,
    *,
    num_train_timesteps: int = 1000,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    sample_posterior: bool = False,
    boundary_mode: str = "token",
    loss_mode: str = "sft",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Supervised fine-tuning loss of the DiT on rendered conversations (see `training.sft.build_sft_batch`), as the
    official SFT script computes it.

    The VAE encodes every token (padding included, as the official script does); its posterior mean, or a sample
    when `sample_posterior` (the official training default; validation uses the mean), normalised, is `x_0`. Every
    sample gets one logit-normal `σ`; the noisy copy follows the turn-boundary rule (`boundary_mode`) and the loss
    mode (`loss_mode`) of `sft_noisy_copy`.

    With `patch_size > 1` a latent is a response latent when any of its tokens is, and is trained on when any of its
    tokens is in `loss_mask`: no response token is ever held clean, at the price of noising the prompt tokens that
    share a latent with the first response tokens.

    Args:
        input_ids (`torch.LongTensor` of shape `(B, N)`): Rendered, padded conversations.
        response (`torch.BoolTensor` of shape `(B, N)`): The response tokens, padding included.
        loss_mask (`torch.BoolTensor` of shape `(B, N)`): The response tokens before the padding.
        block_size (`int` or `torch.LongTensor` of shape `(B,)`): Latents per block, or each sample's.

    Returns:
        The mean squared velocity error over the trained response latents.
    """
    device = input_ids.device
    patch_size = vae.config.patch_size
    posterior = vae.encode(input_ids, torch.ones_like(input_ids)).latent_dist
    latents = posterior.sample(generator) if sample_posterior else posterior.mode()
    clean = vae.normalize_latents(latents)
    batch_size, num_latents, _ = clean.shape
    response = response.bool().unflatten(1, (-1, patch_size)).any(-1)
    loss_mask = loss_mask.bool().unflatten(1, (-1, patch_size)).any(-1)

    sigma = sample_logit_normal((batch_size,), logit_mean, logit_std, generator, device)
    noise = torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype)
    noisy, timestep, weight = sft_noisy_copy(
        clean,
        noise,
        sigma,
        response,
        loss_mask,
        block_size,
        num_train_timesteps=num_train_timesteps,
        boundary_mode=boundary_mode,
        loss_mode=loss_mode,
    )
    valid = torch.ones((batch_size, num_latents), dtype=torch.bool, device=device)
    return layout_velocity_error(
        transformer, clean, noisy, timestep, noise - clean, valid, weight=weight, block_size=block_size
    )
