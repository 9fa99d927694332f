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

"""Where a generated text stops: stop tokens and stop strings, and the cut of new tokens at the first of them."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..loaders.tokenizer import EOS_TOKEN, IM_END_TOKEN
from .chat import ChatFormat


@dataclass
class Completion:
    """
    The new tokens of one prompt, cut at its first stop.

    Args:
        token_ids (`list[int]`): The kept tokens, a stop token included.
        text (`str`): Their text, without the stop token or stop string.
        stopped (`bool`): Whether a stop token or stop string was found.
    """

    token_ids: list[int]
    text: str
    stopped: bool


def get_stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's `<|endoftext|>` and `<|im_end|>` tokens, where it has them."""
    vocab = tokenizer.get_vocab()
    return [vocab[token] for token in (EOS_TOKEN, IM_END_TOKEN) if token in vocab]


def chat_stop_token_id(tokenizer: PreTrainedTokenizerBase, chat: ChatFormat) -> int | None:
    """The id of the token that ends a turn in `chat`, where the tokenizer has it as one token."""
    if chat.stop_token is None:
        return None
    ids = tokenizer(chat.stop_token, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def resolve_pad_token_id(pad_token_id: int | None, chat_pad_token_id: int | None, default: int | None) -> int:
    """
    The pad token of a request: `pad_token_id`, else the chat format's stop token where the format pads with it
    (`chat_pad_token_id`), else the tokenizer's `default`; a `ValueError` when none is set.
    """
    for candidate in (pad_token_id, chat_pad_token_id, default):
        if candidate is not None:
            return candidate
    raise ValueError("`pad_token_id` is required: the tokenizer has no `<|pad|>` token, pass one explicitly.")


def resolve_stops(
    tokenizer: PreTrainedTokenizerBase,
    stop: list[str] | None,
    eos_token_id: int | list[int] | None,
    eos_early_stop: bool,
    chat: ChatFormat | None = None,
    turn_stop_token_id: int | None = None,
) -> tuple[list[int], list[str] | None]:
    """
    The stop tokens and stop strings of a request: `eos_token_id` (by default the tokenizer's; none without
    `eos_early_stop`) and `stop`; a chat request in the format `chat` adds the format's stop strings and
    `turn_stop_token_id`, the token that ends a turn.
    """
    if eos_token_id is None:
        stop_token_ids = get_stop_token_ids(tokenizer)
    else:
        stop_token_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    stop_token_ids = stop_token_ids if eos_early_stop else []
    stop = list(stop or [])
    if chat is not None:
        stop += [marker for marker in chat.stop if marker not in stop]
        if eos_early_stop and eos_token_id is None and turn_stop_token_id not in (None, *stop_token_ids):
            stop_token_ids.append(turn_stop_token_id)
    return stop_token_ids, stop or None


def truncate(
    tokenizer: PreTrainedTokenizerBase, new_token_ids: list[int], stop_token_ids: list[int], stop: list[str] | None
) -> Completion:
    """Cuts new tokens at the first stop token (kept) or after the token that completes a stop string."""
    for index, token_id in enumerate(new_token_ids):
        if token_id in stop_token_ids:
            kept, text_ids, stopped = new_token_ids[: index + 1], new_token_ids[:index], True
            break
    else:
        kept, text_ids, stopped = new_token_ids, new_token_ids, False
    text = tokenizer.decode(text_ids, skip_special_tokens=True)
    hits = [(text.find(marker), marker) for marker in stop or [] if marker in text]
    if not hits:
        return Completion(kept, text, stopped)
    position, marker = min(hits)
    # The fewest tokens whose text contains the stop string.
    low, high = 1, len(text_ids)
    while low < high:
        middle = (low + high) // 2
        if marker in tokenizer.decode(text_ids[:middle], skip_special_tokens=True):
            high = middle
        else:
            low = middle + 1
    return Completion(text_ids[:low], text[:position], True)


def finish_reasons(completions: list[Completion], interrupted: bool = False) -> list[str]:
    """Why every prompt ended: `"stop"` at a stop, else `"interrupted"` or, having generated all, `"length"`."""
    unstopped = "interrupted" if interrupted else "length"
    return ["stop" if completion.stopped else unstopped for completion in completions]


def pad_sequences(
    completions: list[Completion], gen_length: int, pad_token_id: int, device: torch.device
) -> torch.LongTensor:
    """The kept tokens of every prompt padded to `gen_length`, `(batch_size, gen_length)`."""
    sequences = torch.full((len(completions), gen_length), pad_token_id, dtype=torch.long, device=device)
    for row, completion in enumerate(completions):
        sequences[row, : len(completion.token_ids)] = torch.tensor(completion.token_ids, dtype=torch.long)
    return sequences
