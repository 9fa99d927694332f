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

"""Chat messages in the three official renderings: the adapter's plain text, the SFT text format and ChatML."""

import json
import os
import shutil

import pytest
import torch

from cola_diffusers import ColaDLMPipeline

from ..cli_processes import run_cli
from ..conftest import FIXTURE_DIR, make_chat_pipeline


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "And 4 + 4?"},
]
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]
QUESTION_IDS = [57, 74, 294, 223, 305, 223, 20, 223, 13, 223, 21, 33]
# The fixture tokenizer, plus `<|im_start|>` (384) for ChatML; `<|im_end|>` is 1, "\n" 201, "■" the tokens 161 247 257.
RENDERED_IDS = {
    # System: Be brief.\nUser: What is 2 + 3?\nAssistant: 5\nUser: And 4 + 4?\nAssistant:
    "plain": [
        53, 91, 283, 71, 79, 28, 223, 36, 71, 274, 84, 75, 71, 72, 16, 201, 55, 85, 261, 28, 223, 57, 74, 294, 223,
        305, 223, 20, 223, 13, 223, 21, 33, 201, 35, 85, 85, 75, 283, 337, 28, 223, 23, 201, 55, 85, 261, 28, 223, 35,
        292, 223, 22, 223, 13, 223, 22, 33, 201, 35, 85, 85, 75, 283, 337, 28,
    ],
    # User: Be brief.\n\nWhat is 2 + 3?\nAssistant: 5■\nUser: And 4 + 4?\nAssistant: (with its trailing space)
    "text": [
        55, 85, 261, 28, 223, 36, 71, 274, 84, 75, 71, 72, 16, 201, 201, 57, 74, 294, 223, 305, 223, 20, 223, 13, 223,
        21, 33, 201, 35, 85, 85, 75, 283, 337, 28, 223, 23, 161, 247, 257, 201, 55, 85, 261, 28, 223, 35, 292, 223, 22,
        223, 13, 223, 22, 33, 201, 35, 85, 85, 75, 283, 337, 28, 223,
    ],
    # <|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n...<|im_start|>assistant\n
    "chatml": [
        384, 85, 91, 283, 71, 79, 201, 36, 71, 274, 84, 75, 71, 72, 16, 1, 201, 384, 87, 85, 261, 201, 57, 74, 294,
        223, 305, 223, 20, 223, 13, 223, 21, 33, 1, 201, 384, 376, 85, 75, 283, 337, 201, 23, 1, 201, 384, 87, 85, 261,
        201, 35, 292, 223, 22, 223, 13, 223, 22, 33, 1, 201, 384, 376, 85, 75, 283, 337, 201,
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def chat_pipe():
    return make_chat_pipeline()


@pytest.fixture(scope="module")
def base_pipe():
    pipe = ColaDLMPipeline.from_pretrained(FIXTURE_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("chat_format", list(RENDERED_IDS))
def test_each_format_renders_the_official_tokens(chat_pipe, chat_format):
    assert chat_pipe.tokenize(messages=CONVERSATION, chat_format=chat_format) == [RENDERED_IDS[chat_format]]


def test_one_user_message_is_sent_verbatim_by_default(chat_pipe):
    assert chat_pipe.chat_format == "plain"
    assert chat_pipe.tokenize(messages=QUESTION) == [QUESTION_IDS]
    # ChatML as the official SFT script renders it: <|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n.
    chatml = [384, 87, 85, 261, 201, *QUESTION_IDS, 1, 201, 384, 376, 85, 75, 283, 337, 201]
    assert chat_pipe.tokenize(messages=QUESTION, chat_format="chatml") == [chatml]


def test_chat_on_a_base_checkpoint_equals_the_completion_of_its_text(base_pipe):
    kwargs = {"gen_length": 9, "num_inference_steps": 3, "output_type": "latent"}
    chat = base_pipe(messages=QUESTION, generator=torch.Generator().manual_seed(5), **kwargs)
    completion = base_pipe("What is 2 + 3?", generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(chat.latents, completion.latents)
    assert chat.sequences.tolist() == completion.sequences.tolist()


def test_text_format_pads_and_stops_with_its_stop_token():
    pipe = make_chat_pipeline(extra_tokens=["■"])
    stop_id = pipe.tokenizer.convert_tokens_to_ids("■")
    assert pipe.checkpoint_defaults.chat_tokens(pipe.tokenizer, "text") == (stop_id, True)
    text = pipe.make_request(messages=QUESTION, chat_format="text")
    assert (text.stop_token_ids, text.stop, text.pad_token_id) == ((0, 1, stop_id), ("■",), stop_id)
    chatml = pipe.make_request(messages=QUESTION, chat_format="chatml")
    assert (chatml.stop_token_ids, chatml.stop) == ((0, 1), ())

    rendered = "User: What is 2 + 3?\nAssistant: "
    assert len(pipe.tokenizer(rendered)["input_ids"]) % 4  # the pad tokens share the prompt's last block
    kwargs = {"gen_length": 9, "num_inference_steps": 3, "eos_early_stop": False, "output_type": "latent"}
    chat = pipe(messages=QUESTION, chat_format="text", generator=torch.Generator().manual_seed(2), **kwargs)
    padded = pipe(rendered, pad_token_id=stop_id, generator=torch.Generator().manual_seed(2), **kwargs)
    default_pad = pipe(rendered, generator=torch.Generator().manual_seed(2), **kwargs)
    assert torch.equal(chat.latents, padded.latents)
    assert not torch.equal(chat.latents, default_pad.latents)


def test_text_answers_end_at_the_stop_string(chat_pipe):
    # "■" is three tokens here: the stop string, not a stop token, ends the answer.
    request = chat_pipe.make_request(messages=QUESTION, chat_format="text")
    ids = chat_pipe.tokenizer("42■\nUser: more", add_special_tokens=False)["input_ids"]
    completion = request.truncate(chat_pipe.tokenizer, ids)
    assert (completion.text, completion.stopped) == ("42", True)


def sft_checkpoint(folder, **settings):
    """A copy of the official fixture whose DiT config records the official SFT script's chat settings."""
    shutil.copytree(FIXTURE_DIR, folder)
    config_path = folder / "cola_dlm" / "cola_dit" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **settings}))
    return folder


def test_checkpoint_records_its_chat_format(tmp_path):
    official = sft_checkpoint(
        tmp_path / "official", sft_chat_format="text", sft_stop_token_id=3, sft_pad_with_stop=False
    )
    pipe = ColaDLMPipeline.from_pretrained(official)
    assert (pipe.chat_format, pipe.checkpoint_defaults.chat_tokens(pipe.tokenizer, "text")) == ("text", (3, False))
    # User: What is 2 + 3?\nAssistant: (with its trailing space)
    assert pipe.tokenize(messages=QUESTION) == [
        [55, 85, 261, 28, 223, *QUESTION_IDS, 201, 35, 85, 85, 75, 283, 337, 28, 223]
    ]

    pipe.save_pretrained(tmp_path / "converted")
    assert json.loads((tmp_path / "converted" / "model_index.json").read_text())["chat_format"] == "text"
    reloaded = ColaDLMPipeline.from_pretrained(tmp_path / "converted")
    defaults = reloaded.checkpoint_defaults
    assert (reloaded.chat_format, defaults.chat_tokens(reloaded.tokenizer, "text")) == ("text", (3, False))


def test_bad_chat_inputs_are_named(chat_pipe, base_pipe):
    with pytest.raises(ValueError, match="Every message needs a 'role' and a 'content'"):
        chat_pipe(messages=[{"content": "hi"}], gen_length=4)
    with pytest.raises(ValueError, match="`chat_format` must be one of \\['plain', 'text', 'chatml'\\]"):
        chat_pipe(messages=QUESTION, chat_format="llama", gen_length=4)
    with pytest.raises(ValueError, match="`chat_format` applies to `messages`"):
        chat_pipe("hi", chat_format="text", gen_length=4)
    with pytest.raises(ValueError, match="Every message of the conversation is empty"):
        chat_pipe(messages=[{"role": "system", "content": " "}, {"role": "user", "content": ""}], gen_length=4)
    # One empty user message is sent verbatim: the error names the conversation, not a prompt.
    with pytest.raises(ValueError, match="`messages\\[0\\]` tokenizes to no tokens"):
        chat_pipe(messages=[{"role": "user", "content": ""}], gen_length=4)
    # The fixture's tokenizer has no `<|im_start|>`: ChatML is refused, the other formats work.
    with pytest.raises(ValueError, match="needs a tokenizer with the tokens \\['<\\|im_start\\|>'\\]"):
        base_pipe(messages=QUESTION, chat_format="chatml", gen_length=4)


@pytest.mark.slow
def test_the_command_line_takes_the_checkpoints_chat_format(tmp_path):
    official = sft_checkpoint(tmp_path / "official", sft_chat_format="text")
    command = ["generate", "--chat", "What is 2 + 3?", "--model", official, "--gen-length", "6", "--steps", "2"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    printed = run_cli([*command, "--seed", "4"], env=environment, check=True).stdout
    pipe = ColaDLMPipeline.from_pretrained(official)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(messages=QUESTION, gen_length=6, num_inference_steps=2, generator=torch.Generator().manual_seed(4))
    plain = pipe(
        messages=QUESTION,
        chat_format="plain",
        gen_length=6,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(4),
    )
    assert printed == expected.texts[0] + "\n" and expected.texts != plain.texts
