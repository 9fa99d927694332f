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

"""The tokenizer of a Cola-DLM checkpoint and the special tokens of the release's vocabulary."""

import os

from transformers import PreTrainedTokenizerFast


PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
IM_END_TOKEN = "<|im_end|>"
# The context of the released checkpoint's OLMo 2 tokenizer, for checkpoints that record no `model_max_length`.
DEFAULT_MAX_SEQUENCE_LENGTH = 4096


def load_tokenizer(tokenizer_file: str, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """
    Loads a `tokenizer.json`, naming `<|pad|>` and `<|endoftext|>` as pad and eos tokens when it has them, with
    `model_max_length` as its context (none recorded when it is None).
    """
    if not os.path.isfile(tokenizer_file):
        raise FileNotFoundError(f"The checkpoint is missing `{tokenizer_file}`.")
    kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
    try:
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, **kwargs)
    except Exception as error:
        raise ValueError(f"`{tokenizer_file}` is not a readable tokenizer file: {error}") from error
    vocab = tokenizer.get_vocab()
    special_tokens = {"pad_token": PAD_TOKEN, "eos_token": EOS_TOKEN}
    tokenizer.add_special_tokens({name: token for name, token in special_tokens.items() if token in vocab})
    return tokenizer
