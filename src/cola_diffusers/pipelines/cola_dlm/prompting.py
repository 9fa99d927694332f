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

"""The prompts, chat settings and stops of a [`ColaDLMPipeline`] request, from the pipeline's tokenizer and config."""

import torch

from ...generation import prompts, stopping
from ...generation.chat import CHAT_FORMATS
from ...generation.stopping import Completion
from .layout import ColaDLMLayout, count_blocks
from .sampler import encode_prompt


class ColaDLMPromptMixin:
    """Tokenisation, chat rendering and stop criteria of [`ColaDLMPipeline`] (needs its `tokenizer`, `vae` and config)."""

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

    def chat_tokens(self, chat_format: str) -> tuple[int | None, bool]:
        """
        The token that ends a turn in `chat_format` (None where it is not one token) and whether it pads chat
        prompts: the format's, or what the checkpoint records for its own format.
        """
        chat = CHAT_FORMATS[chat_format]
        recorded = chat_format == self.chat_format
        stop_token_id = self.config.chat_stop_token_id if recorded else None
        if stop_token_id is None:
            stop_token_id = stopping.chat_stop_token_id(self.tokenizer, chat)
        pad_with_stop = chat.pad_with_stop
        if recorded and self.config.chat_pad_with_stop is not None:
            pad_with_stop = self.config.chat_pad_with_stop
        return stop_token_id, pad_with_stop

    def stop_criteria(
        self,
        stop: str | list[str] | None = None,
        eos_token_id: int | list[int] | None = None,
        eos_early_stop: bool = True,
        chat_format: str | None = None,
    ) -> tuple[list[int], list[str] | None]:
        """The stop tokens and strings of a request (see `generation.stopping.resolve_stops`); `chat_format` for chats."""
        stop = [stop] if isinstance(stop, str) else stop
        if chat_format is None:
            return stopping.resolve_stops(self.tokenizer, stop, eos_token_id, eos_early_stop)
        turn_stop_token_id = self.chat_tokens(chat_format)[0]
        chat = CHAT_FORMATS[chat_format]
        return stopping.resolve_stops(self.tokenizer, stop, eos_token_id, eos_early_stop, chat, turn_stop_token_id)

    def chat_pad_token_id(self, messages, chat_format: str | None, pad_token_id: int | None) -> int:
        """The pad token of a request: `pad_token_id`, else the chat format's stop token where it pads, else `<|pad|>`."""
        chat_pad_token_id = None
        if messages is not None:
            turn_stop_token_id, pad_with_stop = self.chat_tokens(chat_format)
            chat_pad_token_id = turn_stop_token_id if pad_with_stop else None
        return stopping.resolve_pad_token_id(pad_token_id, chat_pad_token_id, self.pad_token_id)

    def tokenize(
        self,
        prompt: str | list[str] | None = None,
        messages: list[dict] | list[list[dict]] | None = None,
        chat_format: str | None = None,
        max_tokens: int | None = None,
    ) -> list[list[int]]:
        """
        Token ids of every prompt, or of every conversation in `messages` rendered in `chat_format` (default the
        checkpoint's). With `max_tokens`, a longer prompt raises a [`~generation.inputs.PromptTooLongError`],
        refused by its number of characters before tokenising where that suffices.
        """
        if messages is not None:
            prompt = prompts.render_chat(self.tokenizer, messages, CHAT_FORMATS[chat_format or self.chat_format])
        texts = [prompt] if isinstance(prompt, str) else prompt
        return prompts.tokenize(self.tokenizer, texts, max_tokens)

    def num_blocks(self, prompt_token_ids: list[list[int]], gen_length: int, block_length: int | None = None) -> int:
        """The blocks a call generates for these prompts: its `latents` are `num_blocks * block_length` long."""
        block_length = self.transformer.config.block_size if block_length is None else block_length
        lengths = [len(ids) for ids in prompt_token_ids]
        return count_blocks(lengths, gen_length, block_length, self.vae.config.patch_size)

    def encode_prompt(
        self, prompt_token_ids: list[list[int]], block_length: int, pad_token_id: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.LongTensor]:
        """Normalised prompt latents and prompt lengths; see [`sampler.encode_prompt`]."""
        return encode_prompt(self.vae, prompt_token_ids, block_length, pad_token_id, device)

    def truncate(self, new_token_ids: list[int], stop_token_ids: list[int], stop: list[str] | None) -> Completion:
        """Cuts new tokens at the first stop token (kept) or after the token that completes a stop string."""
        return stopping.truncate(self.tokenizer, new_token_ids, stop_token_ids, stop)

    def completions(
        self, tokens: torch.LongTensor, layout: ColaDLMLayout, end: int, gen_length: int, stops: tuple
    ) -> list[Completion]:
        """
        The [`Completion`] of every prompt from the tokens sampled so far (`tokens[:, :end]`): its new tokens (see
        [`ColaDLMLayout.new_token_ids`]) cut at the first of `stops` (stop tokens, stop strings).
        """
        return [self.truncate(ids, *stops) for ids in layout.new_token_ids(tokens, end, gen_length)]
