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
The embedded demo model: a small Cola-DLM trained to reverse four digits (`"1234>"` → `"4321"`).

The task is built procedurally, so the corpus is free to redistribute and needs no download: every string of four
digits is one example, and a fixed, seeded share of them is held out from training to measure generalisation.
"""

import os
import random


DEMO_MODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reverse_digits")
# The demo model distilled to one unguided step per block.
DEMO_FAST_MODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reverse_digits_fast")
# The names the command line accepts for them.
DEMO_MODELS = {"demo": DEMO_MODEL_PATH, "demo-fast": DEMO_FAST_MODEL_PATH}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_end|>", "<|pad|>"]
SYMBOLS = list("0123456789>")
NUM_HELD_OUT = 500


def build_demo_tokenizer(symbols: list[str] = SYMBOLS):
    """
    A character-level `tokenizers.Tokenizer` of `symbols` (by default the digits and `>`), with the release's special
    token names.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + symbols)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|pad|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


def demo_examples(split: str) -> list[str]:
    """The four-digit strings of the `"train"` or `"held_out"` split."""
    if split not in ("train", "held_out"):
        raise ValueError(f"`split` must be 'train' or 'held_out', got {split!r}.")
    numbers = [f"{number:04d}" for number in range(10000)]
    random.Random(0).shuffle(numbers)
    return numbers[NUM_HELD_OUT:] if split == "train" else numbers[:NUM_HELD_OUT]


def demo_prompt(digits: str) -> str:
    """The prompt of an example: `"1234>"`."""
    return f"{digits}>"


def demo_answer(digits: str) -> str:
    """The expected completion: the digits reversed."""
    return digits[::-1]
