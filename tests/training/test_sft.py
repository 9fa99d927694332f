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

"""Supervised fine-tuning: conversation rendering as the official SFT script does it, batches and the SFT loss."""

import json
import os

import pytest
import torch

from cola_diffusers.generation.chat import CHAT_FORMATS
from cola_diffusers.loaders.tokenizer import load_tokenizer
from cola_diffusers.models.transformers.transformer_cola import ColaTransformer1DModelOutput
from cola_diffusers.training import build_sft_batch, render_conversation, sft_loss, two_block_layout_mask
from cola_diffusers.training.losses import sample_logit_normal
from cola_diffusers.training.sft import sft_noisy_copy

from ..conftest import FIXTURE_DIR, FIXTURES, make_chat_pipeline, make_tiny_pipeline


SYSTEM, FIRST, SECOND = "Be brief.", "What is 2 + 3?", "And 4 + 4?"
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": FIRST},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": [{"type": "text", "text": "And 4 "}, {"type": "text", "text": "+ 4?"}]},
    {"role": "assistant", "content": "8"},
]


@pytest.fixture(scope="module")
def chat_pipe():
    # The fixture tokenizer plus `<|im_start|>` (384) and `■` (385); `<|im_end|>` is 1 and `<|pad|>` 2.
    return make_chat_pipeline(extra_tokens=["■"])


@pytest.fixture(scope="module")
def tokenizer(chat_pipe):
    return chat_pipe.tokenizer


def segments(tokenizer, *parts):
    """Ids and roles from `(text or token id, is_response)` pairs, every text encoded on its own."""
    ids, roles = [], []
    for part, is_response in parts:
        part_ids = [part] if isinstance(part, int) else tokenizer.encode(part, add_special_tokens=False)
        ids += part_ids
        roles += [is_response] * len(part_ids)
    return ids, roles


def test_render_text_format_matches_the_official_segments(tokenizer):
    stop = tokenizer.convert_tokens_to_ids("■")
    expected = segments(
        tokenizer,
        (f"User: {SYSTEM}\n\n{FIRST}\n", False),
        ("Assistant: ", False),
        ("5", True),
        (stop, True),
        ("\n", True),
        (f"User: {SECOND}\n", False),
        ("Assistant: ", False),
        ("8", True),
        (stop, True),
        ("\n", True),
    )
    assert render_conversation(tokenizer, CONVERSATION, "text") == expected
    # The same text as the inference template, which then opens the next assistant turn.
    template = CHAT_FORMATS["text"].template
    flat = CONVERSATION[:3] + [{"role": "user", "content": SECOND}, CONVERSATION[4]]
    rendered = tokenizer.apply_chat_template(flat, chat_template=template, tokenize=False)
    assert tokenizer.decode(expected[0]) + "Assistant: " == rendered


def test_render_chatml_format_matches_the_official_segments(tokenizer):
    im_start, im_end = 384, 1
    expected = segments(
        tokenizer,
        (im_start, False),
        ("user\n", False),
        (f"{SYSTEM}\n\n{FIRST}", False),
        (im_end, False),
        ("\n", False),
        (im_start, False),
        ("assistant\n", False),
        ("5", True),
        (im_end, True),
        ("\n", False),
        (im_start, False),
        ("user\n", False),
        (SECOND, False),
        (im_end, False),
        ("\n", False),
        (im_start, False),
        ("assistant\n", False),
        ("8", True),
        (im_end, True),
        ("\n", False),
    )
    assert render_conversation(tokenizer, CONVERSATION, "chatml") == expected


def test_render_chatml_assistant_parts_and_stop_token_override(tokenizer):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "run"}, {"type": "python_output", "text": "7"}]},
    ]
    # Parts of an assistant turn are encoded one by one; tool output is prompt, as in the official script.
    expected = segments(
        tokenizer,
        (384, False),
        ("user\n", False),
        ("hi", False),
        (2, False),
        ("\n", False),
        (384, False),
        ("assistant\n", False),
        ("run", True),
        ("7", False),
        (2, True),
        ("\n", False),
    )
    assert render_conversation(tokenizer, messages, "chatml", stop_token_id=2) == expected


def test_render_errors_name_the_argument(tokenizer):
    with pytest.raises(ValueError, match="`chat_format` must be one of \\['text', 'chatml'\\], got 'plain'"):
        render_conversation(tokenizer, CONVERSATION, "plain")
    with pytest.raises(ValueError, match="`messages\\[1\\]\\['role'\\]` must be one of .*, got 'tool'"):
        render_conversation(tokenizer, [CONVERSATION[2], {"role": "tool", "content": "x"}], "text")
    with pytest.raises(ValueError, match="`messages` has no assistant turn"):
        render_conversation(tokenizer, CONVERSATION[:2], "chatml")
    with pytest.raises(ValueError, match="`conversations\\[1\\]`: `messages` has no assistant turn"):
        build_sft_batch(tokenizer, [CONVERSATION, CONVERSATION[:2]], "text", 64)
    # The fixture's own tokenizer has neither `■` nor `<|im_start|>` as one token.
    plain = load_tokenizer(os.path.join(FIXTURE_DIR, "tokenizer.json"))
    with pytest.raises(ValueError, match="needs a tokenizer with the token '■' as one token"):
        render_conversation(plain, CONVERSATION, "text")
    with pytest.raises(ValueError, match="needs a tokenizer with the token '<\\|im_start\\|>' as one token"):
        render_conversation(plain, CONVERSATION, "chatml")
    assert render_conversation(plain, CONVERSATION, "text", stop_token_id=1)[0].count(1) == 2


@pytest.mark.parametrize(
    "chat_format, pad_with_stop, pad",
    [("text", True, 385), ("text", False, 385), ("chatml", True, 1), ("chatml", False, 2)],
)
def test_build_sft_batch_pads_truncates_and_masks(tokenizer, chat_format, pad_with_stop, pad):
    ids, roles = render_conversation(tokenizer, CONVERSATION, chat_format)
    short = [CONVERSATION[1], {"role": "assistant", "content": "5"}]
    short_ids, short_roles = render_conversation(tokenizer, short, chat_format)
    long_prompt = [{"role": "user", "content": "word " * 40}, {"role": "assistant", "content": "5"}]
    num_pads = 12
    max_length = len(short_ids) + num_pads
    assert len(ids) > max_length and any(roles[:max_length])
    batch = build_sft_batch(
        tokenizer,
        [{"messages": CONVERSATION}, long_prompt, short],
        chat_format,
        max_length,
        pad_with_stop=pad_with_stop,
    )
    # The long prompt leaves no response token within `max_length`: skipped.
    assert batch.indices == [0, 2]
    assert batch.input_ids.tolist() == [ids[:max_length], short_ids + [pad] * num_pads]
    assert batch.response.tolist() == [roles[:max_length], short_roles + [True] * num_pads]
    assert batch.loss_mask.tolist() == [roles[:max_length], short_roles + [False] * num_pads]


def test_sft_noisy_copy_follows_the_turn_boundary_rule():
    P, R, pad = 0, 1, 2
    layouts = [[P, R, R, P, R, P, P, R, R, pad, pad, pad], [R, R, P, P, P, P, R, R, P, R, P, R]]
    roles = torch.tensor(layouts)
    response, loss_mask = roles != P, roles == R
    torch.manual_seed(0)
    clean, noise = torch.randn(2, 12, 3), torch.randn(2, 12, 3)
    sigma = torch.tensor([0.3, 0.7])

    # C: clean at timestep 0; N: noised at σ T; X: pure noise at σ T (a prompt after a response in its block).
    expected = {
        4: ["CNNXNXXNNNNN", "NNXXCCNNCNXN"],
        2: ["CNNXNXCNNNNN", "NNCCCCNNCNCN"],
    }
    for block_size, kinds in expected.items():
        noisy, timestep, weight = sft_noisy_copy(clean, noise, sigma, response, loss_mask, block_size)
        for row, row_kinds in enumerate(kinds):
            s = sigma[row].item()
            for position, kind in enumerate(row_kinds):
                z0, z1 = clean[row, position], noise[row, position]
                want = {"C": z0, "N": (1 - s) * z0 + s * z1, "X": z1}[kind]
                torch.testing.assert_close(noisy[row, position], want, rtol=0, atol=1e-6)
                assert timestep[row, position].item() == pytest.approx(0.0 if kind == "C" else s * 1000)
        # Only the response before the padding is trained on, whatever the block size.
        assert weight.tolist() == loss_mask.float().tolist()


def official_noisy_sample(z_0, roles, t, z_1, block_size, T=1000.0, boundary_mode="token", loss_mode="sft"):
    """The official `build_noisy_sample`, one position at a time."""
    z_noisy, ts, loss = z_0.clone(), torch.zeros(len(roles)), torch.zeros(len(roles))
    noised = (1 - t) * z_0 + t * z_1
    for start in range(0, len(roles), block_size):
        block = roles[start : start + block_size]
        # The block rule: a block with both roles whose first response comes before its first prompt.
        rp_boundary = any(block) and not all(block) and block[0]
        seen_r = False
        for pos in range(start, min(start + block_size, len(roles))):
            seen_r = seen_r or bool(roles[pos])
            leaking = seen_r if boundary_mode == "token" else rp_boundary
            if roles[pos] or (not leaking and loss_mode == "all_token"):
                z_noisy[pos], ts[pos], loss[pos] = noised[pos], t * T, 1.0
            elif leaking:
                z_noisy[pos], ts[pos] = z_1[pos], t * T
    return z_noisy, ts, loss


@pytest.mark.parametrize("boundary_mode", ["token", "block"])
@pytest.mark.parametrize("loss_mode", ["sft", "all_token"])
def test_sft_noisy_copy_follows_the_official_boundary_and_loss_modes(boundary_mode, loss_mode):
    generator = torch.Generator().manual_seed(0)
    roles = torch.rand(6, 16, generator=generator) < 0.5
    clean, noise = torch.randn(6, 16, 3, generator=generator), torch.randn(6, 16, 3, generator=generator)
    sigma = torch.rand(6, generator=generator)
    block_sizes = torch.tensor([1, 2, 4, 8, 16, 4])
    modes = {"boundary_mode": boundary_mode, "loss_mode": loss_mode}
    noisy, timestep, weight = sft_noisy_copy(clean, noise, sigma, roles, roles, block_sizes, **modes)
    for row in range(6):
        expected = official_noisy_sample(
            clean[row], roles[row].tolist(), sigma[row].item(), noise[row], block_sizes[row].item(), **modes
        )
        torch.testing.assert_close(noisy[row], expected[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(timestep[row], expected[1], rtol=1e-6, atol=1e-4)
        assert weight[row].tolist() == expected[2].tolist()


SFT_CONVERSATIONS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "b?"}]
    + [{"role": "assistant", "content": "the river"}],
    [{"role": "system", "content": "x"}, {"role": "user", "content": "the"}, {"role": "assistant", "content": "ok"}],
]


@pytest.mark.parametrize("sample_posterior", [False, True])
def test_sft_loss_matches_a_hand_computation(chat_pipe, sample_posterior):
    transformer, vae, tokenizer = chat_pipe.transformer, chat_pipe.vae, chat_pipe.tokenizer
    block_size, max_length = 4, 32
    batch = build_sft_batch(tokenizer, SFT_CONVERSATIONS, "text", max_length)
    lengths = [len(render_conversation(tokenizer, messages, "text")[0]) for messages in SFT_CONVERSATIONS]
    with torch.no_grad():
        loss = sft_loss(
            transformer,
            vae,
            batch.input_ids,
            batch.response,
            batch.loss_mask,
            block_size,
            sample_posterior=sample_posterior,
            generator=torch.Generator().manual_seed(3),
        )

        generator = torch.Generator().manual_seed(3)
        posterior = vae.encode(batch.input_ids, torch.ones_like(batch.input_ids)).latent_dist
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()
        z_0 = (latents - vae.config.shifting_factor) * vae.config.scaling_factor
        t = sample_logit_normal((2,), generator=generator)
        z_1 = torch.randn(z_0.shape, generator=generator)
        samples = [
            official_noisy_sample(z_0[row], batch.response[row].tolist(), t[row].item(), z_1[row], block_size)
            for row in range(2)
        ]
        z_noisy, ts, loss_weight = (torch.stack(parts) for parts in zip(*samples))
        for row, length in enumerate(lengths):
            loss_weight[row, length:] = 0.0
        # The conversations cross turn boundaries inside blocks: some prompt latents are pure noise.
        assert ((ts > 0) & (loss_weight == 0) & ~batch.response).any()

        positions = torch.arange(max_length).expand(2, -1)
        mask = two_block_layout_mask(positions, torch.ones(2, max_length, dtype=torch.bool), block_size)
        velocity = transformer(
            torch.cat([z_0, z_noisy], 1), torch.cat([torch.zeros_like(ts), ts], 1), torch.cat([positions] * 2, 1), mask
        ).sample[:, max_length:]
        error = (velocity - (z_1 - z_0)).pow(2).mean(-1)
        expected = (error * loss_weight).sum() / loss_weight.sum()
    torch.testing.assert_close(loss, expected)


def perturbed_loss(pipe, batch, block_size, perturbed):
    """`sft_loss` with the DiT's velocity of the noisy copy moved by 100 at the latents `perturbed` `(B, L)`."""

    def hook(module, args, output):
        sample = output.sample.clone()
        num_latents = perturbed.shape[1]
        sample[:, num_latents:] += 100.0 * perturbed[..., None]
        return ColaTransformer1DModelOutput(sample=sample)

    handle = pipe.transformer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return sft_loss(
                pipe.transformer,
                pipe.vae,
                batch.input_ids,
                batch.response,
                batch.loss_mask,
                block_size,
                generator=torch.Generator().manual_seed(0),
            )
    finally:
        handle.remove()


def test_sft_loss_ignores_prompt_and_padding_velocities(chat_pipe):
    batch = build_sft_batch(chat_pipe.tokenizer, SFT_CONVERSATIONS, "text", 32)
    baseline = perturbed_loss(chat_pipe, batch, 4, torch.zeros(2, 32))
    prompt = ~batch.response
    padding = batch.response & ~batch.loss_mask
    assert prompt.any() and padding.any()
    assert perturbed_loss(chat_pipe, batch, 4, (prompt | padding).float()) == baseline
    assert perturbed_loss(chat_pipe, batch, 4, batch.loss_mask.float()) > baseline + 100


def test_sft_loss_trains_every_latent_holding_a_response_token():
    chat = make_chat_pipeline(extra_tokens=["■"])
    pipe = make_tiny_pipeline(vae_kwargs={"vocab_size": len(chat.tokenizer), "patch_size": 2})
    messages = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "5"}]
    batch = build_sft_batch(chat.tokenizer, [messages] * 2, "text", 20)
    # The response starts at an odd token: latent `first // 2` holds the last prompt token and the first response one.
    first = batch.loss_mask[0].nonzero()[0].item()
    assert first % 2 == 1
    baseline = perturbed_loss(pipe, batch, 2, torch.zeros(2, 10))
    mixed = torch.zeros(2, 10)
    mixed[:, first // 2] = 1.0
    assert perturbed_loss(pipe, batch, 2, mixed) > baseline + 100
    untrained = ~batch.loss_mask.unflatten(1, (-1, 2)).any(-1)
    assert untrained[:, -1].all()  # padding
    assert perturbed_loss(pipe, batch, 2, untrained.float()) == baseline


def test_the_sft_stage_saves_the_chat_format_that_messages_then_use(tmp_path):
    from cola_diffusers import ColaDLMPipeline
    from cola_diffusers.demo import DEMO_MODEL_PATH
    from cola_diffusers.training import TrainingConfig, train

    conversations = [
        [{"role": "user", "content": f" {n:04d}>"}, {"role": "assistant", "content": f"{n:04d}"[::-1]}]
        for n in range(8)
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(json.dumps({"messages": messages}) for messages in conversations))
    settings = {"chat_format": "text", "chat_stop_token": "<|im_end|>", "max_length": 32, "batch_size": 4}
    config = TrainingConfig(
        stage="sft",
        train_file=str(data),
        output_dir=str(tmp_path / "sft"),
        pretrained_model=DEMO_MODEL_PATH,
        max_steps=4,
        learning_rate=1e-3,
        sample_posterior=False,
        **settings,
    )
    base = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    _, history = train(config)
    assert len(history) == 4 and history[-1] < history[0]
    saved = json.loads((tmp_path / "sft" / "model_index.json").read_text())
    assert (saved["chat_format"], saved["chat_stop_token_id"], saved["chat_pad_with_stop"]) == ("text", 1, True)

    pipe = ColaDLMPipeline.from_pretrained(tmp_path / "sft")
    assert not any(torch.equal(a, b) for a, b in zip(pipe.transformer.parameters(), base.transformer.parameters()))
    # `messages=` without a chat format renders the prompt as training did, up to the first response token.
    ids, roles = render_conversation(pipe.tokenizer, conversations[0], "text", stop_token_id=1)
    assert pipe.tokenize(messages=conversations[0][:1]) == [ids[: roles.index(True)]]
    assert pipe.make_request(messages=conversations[0][:1]).stop_token_ids[-1] == 1


@pytest.mark.slow
def test_a_tiny_sft_run_answers_its_conversations_through_messages(tmp_path):
    from cola_diffusers import ColaDLMPipeline
    from cola_diffusers.training import TrainingConfig, train

    # `tests/fixtures/chat_base` (scripts/build_chat_fixture.py): a VAE that reads and writes the transcripts and an
    # untrained DiT. Eight conversations, reversing four digits.
    base = str(FIXTURES / "chat_base")
    conversations = [
        [{"role": "user", "content": digits}, {"role": "assistant", "content": digits[::-1]}]
        for digits in ("1136", "0986", "3660", "2424", "6738", "1697", "4366", "9694")
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(json.dumps({"messages": messages}) for messages in conversations))
    questions = [messages[:1] for messages in conversations]
    answers = [messages[1]["content"] for messages in conversations]

    def num_answered(pipe):
        pipe.set_progress_bar_config(disable=True)
        texts = pipe(messages=questions, gen_length=8, guidance_scale=1.0).texts
        return sum(text == answer for text, answer in zip(texts, answers))

    assert num_answered(ColaDLMPipeline.from_pretrained(base, chat_format="text")) == 0
    config = TrainingConfig(
        stage="sft",
        train_file=str(data),
        output_dir=str(tmp_path / "sft"),
        pretrained_model=base,
        chat_format="text",
        max_length=32,
        batch_size=8,
        learning_rate=3e-3,
        max_steps=300,  # answers all 8 here; the test needs 6
        sample_posterior=False,
    )
    train(config)
    # The saved chat format renders `messages=`: no chat format is passed here.
    assert num_answered(ColaDLMPipeline.from_pretrained(tmp_path / "sft")) >= 6
