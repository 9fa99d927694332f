"""Chat prompts in the release's ChatML convention."""

import pytest
import torch

from .conftest import make_chat_pipeline, make_tiny_pipeline


@pytest.fixture(scope="module")
def chat_pipe():
    return make_chat_pipeline()


def test_messages_are_rendered_as_the_official_sft_prompt(chat_pipe):
    tokenizer = chat_pipe.tokenizer
    vocab = tokenizer.get_vocab()

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # The official `is_sft` path: [im_start, user, \n] + prompt + [im_end, \n, im_start, assistant, \n].
    expected = (
        [vocab["<|im_start|>"], *encode("user"), *encode("\n")]
        + encode("What is 2 + 3?")
        + [vocab["<|im_end|>"], *encode("\n"), vocab["<|im_start|>"], *encode("assistant"), *encode("\n")]
    )
    assert chat_pipe.tokenize(messages=[{"role": "user", "content": "What is 2 + 3?"}]) == [expected]


def test_messages_generate_like_the_rendered_tokens(chat_pipe):
    messages = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "hello"}]]
    kwargs = {"gen_length": 6, "num_inference_steps": 2, "generator": torch.Generator().manual_seed(0)}
    output = chat_pipe(messages=messages, **kwargs)
    assert output.sequences.shape == (2, 6) and len(output.texts) == 2


def test_malformed_messages_are_rejected(chat_pipe):
    with pytest.raises(ValueError, match="Every message needs a 'role' and a 'content'"):
        chat_pipe(messages=[{"content": "hi"}], gen_length=4)


def test_messages_need_chat_tokens():
    pipe = make_tiny_pipeline()
    with pytest.raises(ValueError, match="`messages` need a tokenizer with `<\\|im_start\\|>`"):
        pipe(messages=[{"role": "user", "content": "hi"}], gen_length=4)
