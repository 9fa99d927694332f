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

"""Prompts of a generation request: chat rendering, tokenisation and the context limit."""

import functools

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from ..loaders.tokenizer import DEFAULT_MAX_SEQUENCE_LENGTH
from .chat import ChatFormat
from .inputs import PromptTooLongError


# What transformers sets `model_max_length` to when a tokenizer records none (`VERY_LARGE_INTEGER`, 1e30).
UNSET_MODEL_MAX_LENGTH = int(1e29)


def max_sequence_length(tokenizer: PreTrainedTokenizerBase) -> int:
    """
    The longest prompt plus new tokens: the tokenizer's `model_max_length` where the checkpoint records one, else
    [`DEFAULT_MAX_SEQUENCE_LENGTH`] (the release ships a bare `tokenizer.json`, which records none).
    """
    length = tokenizer.model_max_length
    return DEFAULT_MAX_SEQUENCE_LENGTH if length is None or length >= UNSET_MODEL_MAX_LENGTH else int(length)


@functools.lru_cache(maxsize=8)
def max_token_characters(tokenizer: PreTrainedTokenizerBase) -> int:
    """The most characters one token stands for: its longest vocabulary entry (one character per byte in BPE)."""
    return max(map(len, tokenizer.get_vocab()))


def check_prompt_characters(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_tokens: int):
    """Refuses, without tokenising, a prompt with more characters than `max_tokens` tokens can stand for."""
    max_characters = max_tokens * max_token_characters(tokenizer)
    for index, text in enumerate(prompts):
        if len(text) > max_characters:
            raise PromptTooLongError(
                f"`prompt[{index}]` has {len(text)} characters, more than the {max_tokens} prompt tokens that fit "
                f"can hold; shorten it or lower the number of new tokens."
            )


def tokenize(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_tokens: int | None = None, source: str = "prompt"
) -> list[list[int]]:
    """
    Token ids of every prompt, as `tokenizers.Tokenizer.encode` gives them. A prompt that tokenizes to nothing or,
    with `max_tokens`, to more than `max_tokens` tokens raises a `ValueError` (a [`PromptTooLongError`]); errors
    name the prompt as `source[index]` (`messages[index]` for rendered conversations).
    """
    if max_tokens is not None:
        check_prompt_characters(tokenizer, prompts, max_tokens)
    token_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    for index, ids in enumerate(token_ids):
        if len(ids) == 0:
            raise ValueError(f"`{source}[{index}]` tokenizes to no tokens; every prompt needs at least one.")
        if max_tokens is not None and len(ids) > max_tokens:
            raise PromptTooLongError(
                f"`prompt[{index}]` has {len(ids)} tokens; at most {max_tokens} fit with the requested new tokens."
            )
    return token_ids


def check_token_ids(prompt_token_ids, vocab_size: int, max_tokens: int):
    """Raises a `ValueError` unless every prompt is 1 to `max_tokens` token ids in `[0, vocab_size)`."""
    if not isinstance(prompt_token_ids, (list, tuple)) or not prompt_token_ids:
        raise ValueError("`prompt_token_ids` must be a non-empty list of lists of token ids.")
    for index, ids in enumerate(prompt_token_ids):
        if not isinstance(ids, (list, tuple)) or not ids:
            raise ValueError(f"`prompt_token_ids[{index}]` must be a non-empty list of token ids, got {ids!r}.")
        if not all(isinstance(id_, int) and not isinstance(id_, bool) and 0 <= id_ < vocab_size for id_ in ids):
            raise ValueError(f"`prompt_token_ids[{index}]` must hold integers in [0, {vocab_size}).")
        if len(ids) > max_tokens:
            raise PromptTooLongError(
                f"`prompt_token_ids[{index}]` has {len(ids)} tokens; at most {max_tokens} fit with the requested new "
                "tokens."
            )


def check_messages(conversation: list[dict]):
    """Raises a `ValueError` for a message without a 'role' and a string 'content'."""
    for message in conversation:
        if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
            raise ValueError(f"Every message needs a 'role' and a 'content', got {message!r}.")
        if not isinstance(message["content"], str):
            raise ValueError(f"A message's 'content' must be a string, got {type(message['content']).__name__}.")


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict] | list[list[dict]],
    chat_format: ChatFormat,
    add_generation_prompt: bool = True,
) -> list[str]:
    """
    The prompt text of every conversation, rendered by the chat template of `chat_format`: followed by the start of
    the assistant's turn, or, without `add_generation_prompt`, ending inside its last (assistant) message.
    """
    missing = [token for token in chat_format.required_tokens if token not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"This chat format needs a tokenizer with the tokens {missing}; pick another `chat_format`.")
    conversations = [messages] if isinstance(messages[0], dict) else messages
    texts = []
    for conversation in conversations:
        check_messages(conversation)
        try:
            texts.append(
                tokenizer.apply_chat_template(
                    conversation,
                    chat_template=chat_format.template,
                    tokenize=False,
                    add_generation_prompt=add_generation_prompt,
                    continue_final_message=not add_generation_prompt,
                )
            )
        except TemplateError as error:
            raise ValueError(f"`messages` cannot be rendered: {error}") from error
    return texts
