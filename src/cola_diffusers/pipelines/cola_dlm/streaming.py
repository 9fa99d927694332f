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

"""Streaming of generated text, in the manner of transformers' streamers: `put` per decoded block, then `end`."""

import queue

import torch
from transformers import PreTrainedTokenizerBase

from ...generation.stopping import Completion
from .layout import GeneratedBlock
from .pipeline_output import ColaDLMStreamChunk
from .sampler import BlockSampler


class ColaDLMStreamer:
    """
    Receives the chunks of a [`ColaDLMPipeline`] call made with `streamer=`: `put` for every decoded block (and
    every preview), `end` once generation is over. Subclass it to print, send or collect chunks.
    """

    def put(self, chunk: ColaDLMStreamChunk):
        raise NotImplementedError

    def end(self):
        pass


class ColaDLMIteratorStreamer(ColaDLMStreamer):
    """
    A streamer that is an iterator of chunks, for a generation running in another thread (like transformers'
    `TextIteratorStreamer`); iteration ends at `end`.

    Args:
        timeout (`float`, *optional*): Seconds to wait for a chunk before `queue.Empty` is raised.
    """

    _end = object()

    def __init__(self, timeout: float | None = None):
        self.chunks = queue.Queue()
        self.timeout = timeout

    def put(self, chunk: ColaDLMStreamChunk):
        self.chunks.put(chunk)

    def end(self):
        self.chunks.put(self._end)

    def __iter__(self):
        return self

    def __next__(self) -> ColaDLMStreamChunk:
        chunk = self.chunks.get(timeout=self.timeout)
        if chunk is self._end:
            raise StopIteration
        return chunk


class TextDeltas:
    """The new text of every prompt since its previous block chunk, from the completions so far."""

    def __init__(self, batch_size: int):
        self.texts = [""] * batch_size

    def __call__(self, completions: list[Completion], last: bool) -> list[str]:
        return [self.delta(row, completion, last) for row, completion in enumerate(completions)]

    def delta(self, row: int, completion: Completion, last: bool) -> str:
        """The new text of prompt `row`; `last` when nothing more comes for it."""
        # A trailing partial character waits for the tokens that complete it, unless nothing more comes.
        visible = completion.text if completion.stopped or last else completion.text.rstrip("\ufffd")
        delta = visible[len(self.texts[row]) :]
        self.texts[row] = visible
        return delta


def check_preview_every(preview_every):
    """Raises a `ValueError` unless `preview_every` is None or an integer >= 1."""
    if preview_every is not None and (not isinstance(preview_every, int) or preview_every < 1):
        raise ValueError(f"`preview_every` must be an integer >= 1 or None, got {preview_every!r}.")


def block_chunk(
    block: GeneratedBlock, tokens: torch.LongTensor, completions: list[Completion], texts: list[str]
) -> ColaDLMStreamChunk:
    """The stream chunk of a decoded block: its tokens, the new text of every prompt and which have stopped."""
    return ColaDLMStreamChunk(
        block_index=block.index,
        step_index=None,
        token_ids=tokens[:, block.token_slice].tolist(),
        texts=texts,
        finished=[completion.stopped for completion in completions],
        is_preview=False,
    )


def preview_chunk(
    tokenizer: PreTrainedTokenizerBase,
    sampler: BlockSampler,
    block: GeneratedBlock,
    predicted_latents: torch.Tensor,
    step_index: int,
) -> ColaDLMStreamChunk:
    """A preview chunk: the tokens of a block's predicted clean latents, without its re-emitted prompt tokens."""
    preview = sampler.decode_block(block, predicted_latents).argmax(-1)
    trimmed = sampler.layout.num_trimmed_tokens if block.index == 0 else [0] * preview.shape[0]
    token_ids = [ids[start:] for ids, start in zip(preview.tolist(), trimmed)]
    return ColaDLMStreamChunk(
        block_index=block.index,
        step_index=step_index,
        token_ids=token_ids,
        texts=tokenizer.batch_decode(token_ids, skip_special_tokens=True),
        finished=[False] * len(token_ids),
        is_preview=True,
    )
