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

"""The requests of a [`ColaDLMPipeline`]: built from a call's arguments, the pipeline's tokenizer and its config."""

import torch

from ...generation import prompts, stopping
from ...generation.chat import CHAT_FORMATS
from ...generation.request import (
    REQUEST_ARGUMENTS,
    CheckpointDefaults,
    GenerationRequest,
    build_request,
    tokenize_request,
)
from .layout import ColaDLMLayout, count_blocks
from .sampler import encode_prompt


class ColaDLMPromptMixin:
    """Requests, tokenisation and prompt encoding of [`ColaDLMPipeline`] (needs its `tokenizer`, `vae` and config)."""

    @property
    def pad_token_id(self) -> int | None:
        """The tokenizer's pad token (`<|pad|>` in the release)."""
        return self.tokenizer.pad_token_id

    @property
    def stop_token_ids(self) -> list[int]:
        """The tokenizer's `<|endoftext|>` and `<|im_end|>` tokens, where it has them."""
        return stopping.get_stop_token_ids(self.tokenizer)

    @property
    def max_sequence_length(self) -> int:
        """
        Prompt plus new tokens at most: the tokenizer's `model_max_length` where the checkpoint records one, else
        4096 (the context of the release's OLMo 2 tokenizer).
        """
        return prompts.max_sequence_length(self.tokenizer)

    @property
    def chat_format(self) -> str:
        """The checkpoint's chat format: `"plain"` unless it records another."""
        return self.config.chat_format or "plain"

    @property
    def checkpoint_defaults(self) -> CheckpointDefaults:
        """What this checkpoint sets for requests that leave a setting unset."""
        return CheckpointDefaults.from_pipeline(self)

    def make_request(self, request: GenerationRequest | None = None, **arguments) -> GenerationRequest:
        """
        The [`GenerationRequest`] of a call's arguments (those of `__call__`, see [`build_request`]), or `request`
        itself when one is given, with every argument left None.
        """
        unknown = sorted(set(arguments) - REQUEST_ARGUMENTS)
        if unknown:
            raise TypeError(f"Unknown request arguments {unknown}.")
        if request is None:
            return build_request(self.tokenizer, self.checkpoint_defaults, **arguments)
        given = sorted(name for name, value in arguments.items() if value is not None)
        if given:
            raise ValueError(f"Pass either `request` or its arguments, not both; got `request` and {given}.")
        return request

    def tokenize(
        self,
        prompt: str | list[str] | None = None,
        messages: list[dict] | list[list[dict]] | None = None,
        chat_format: str | None = None,
        max_tokens: int | None = None,
    ) -> list[list[int]]:
        """
        Token ids of every prompt, or of every conversation in `messages` rendered in `chat_format` (default the
        checkpoint's). With `max_tokens`, a longer prompt raises a [`~generation.inputs.PromptTooLongError`].
        """
        chat = CHAT_FORMATS[chat_format or self.chat_format] if messages is not None else None
        return tokenize_request(self.tokenizer, prompt, messages, chat, max_tokens)

    def num_blocks(self, request: GenerationRequest) -> int:
        """The blocks a request generates: its `latents` are `num_blocks * block_length` long."""
        lengths = [len(ids) for ids in request.prompt_token_ids]
        return count_blocks(lengths, request.gen_length, request.block_length, self.vae.config.patch_size)

    def encode_prompt(self, request: GenerationRequest, device: torch.device) -> tuple[torch.Tensor, torch.LongTensor]:
        """Normalised prompt latents and prompt lengths of a request; see [`sampler.encode_prompt`]."""
        return encode_prompt(self.vae, request.prompt_token_ids, request.block_length, request.pad_token_id, device)

    def completions(
        self, request: GenerationRequest, layout: ColaDLMLayout, tokens: torch.LongTensor, end: int
    ) -> list[stopping.Completion]:
        """
        The [`Completion`] of every prompt from the tokens sampled so far (`tokens[:, :end]`): its new tokens (see
        [`ColaDLMLayout.new_token_ids`]) cut at the request's first stop.
        """
        new_token_ids = layout.new_token_ids(tokens, end, request.gen_length)
        return [request.truncate(self.tokenizer, ids) for ids in new_token_ids]
