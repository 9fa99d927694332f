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

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput

from ...generation.request import GenerationRequest
from ...generation.stopping import Completion, finish_reasons, pad_sequences


@dataclass
class ColaDLMPipelineOutput(BaseOutput):
    """
    Output of [`ColaDLMPipeline`].

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, gen_length)`):
            The new token ids (the prompt is stripped off), padded with the pad token after a stop token.
        texts (`list[str]`, *optional*):
            The decoded new text of every prompt, up to (without) its stop token. Set for `output_type="text"`.
        latents (`torch.Tensor` of shape `(batch_size, num_blocks * block_length, latent_dim)`, *optional*):
            The clean latents of every generated block in the DiT's normalised space. Set for `output_type="latent"`.
        finish_reasons (`list[str]`, *optional*):
            Why every prompt ended: `"stop"` (a stop token or stop string), `"length"` (`gen_length` new tokens) or
            `"interrupted"` (the call was interrupted first).
        num_tokens (`list[int]`, *optional*):
            The number of new tokens every prompt kept: those of `sequences` before the padding, a stop token
            included.
    """

    sequences: torch.LongTensor
    texts: list[str] | None = None
    latents: torch.Tensor | None = None
    finish_reasons: list[str] | None = None
    num_tokens: list[int] | None = None


@dataclass
class ColaDLMStreamChunk(BaseOutput):
    """
    One event of [`ColaDLMPipeline.stream`].

    Args:
        block_index (`int`): The generated block this chunk belongs to.
        step_index (`int`, *optional*): For previews, the denoising step of the block; None for decoded blocks.
        token_ids (`list[list[int]]`): Per prompt, the tokens of the block (for previews, of its predicted latents).
        texts (`list[str]`): Per prompt, the new text since the previous block chunk; for previews, the text of
            the whole previewed block.
        finished (`list[bool]`): Per prompt, whether it has produced a stop token or stop string.
        is_preview (`bool`): Whether this is an intermediate preview rather than a decoded block.
    """

    block_index: int
    step_index: int | None
    token_ids: list[list[int]]
    texts: list[str]
    finished: list[bool]
    is_preview: bool = False


def make_output(
    request: GenerationRequest,
    completions: list[Completion],
    clean_latents: torch.Tensor,
    output_type: str,
    interrupted: bool,
) -> ColaDLMPipelineOutput:
    """
    The output of a call: the kept tokens of every prompt padded to `gen_length`, why each ended, and the texts or
    latents `output_type` asks for.
    """
    return ColaDLMPipelineOutput(
        sequences=pad_sequences(completions, request.gen_length, request.pad_token_id, clean_latents.device),
        texts=[completion.text for completion in completions] if output_type == "text" else None,
        latents=clean_latents if output_type == "latent" else None,
        finish_reasons=finish_reasons(completions, interrupted),
        num_tokens=[len(completion.token_ids) for completion in completions],
    )
