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

"""Training objectives and the accelerate training loop on tiny models."""

import json
import math
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from cola_diffusers.training import TrainingConfig, prior_loss, train, two_block_layout_mask, vae_loss

from ..conftest import CPU_LAUNCH, FIXTURE_DIR, make_tiny_pipeline


CORPUS = [f"the river story number {i} ends here." for i in range(12)] + ["a long day of work and play at home."] * 4


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS))
    return str(path)


def tiny_config(stage, corpus_file, output_dir, **overrides):
    values = {
        "stage": stage,
        "train_file": corpus_file,
        "output_dir": str(output_dir),
        "tokenizer_file": os.path.join(FIXTURE_DIR, "tokenizer.json"),
        "transformer_config": {
            "num_layers": 1,
            "num_attention_heads": 2,
            "attention_head_dim": 16,
            "rope_dim": 8,
            "block_size": 4,
        },
        "vae_config": {
            "latent_dim": 8,
            "hidden_size": 32,
            "num_attention_heads": 2,
            "ffn_dim": 64,
            "encoder_num_blocks": 1,
            "decoder_num_blocks": 1,
            "block_size": 4,
        },
        "max_length": 16,
        "block_sizes": [2, 4],
        "batch_size": 8,
        "learning_rate": 3e-3,
        "max_steps": 1,
    }
    return TrainingConfig(**{**values, **overrides})


def test_two_block_layout_mask_matches_a_hand_built_expectation():
    positions = torch.arange(4)[None]
    valid = torch.tensor([[True, True, True, False]])
    mask = two_block_layout_mask(positions, valid, block_size=2)[0, 0].int()
    # Rows/columns: clean 0..3, then noisy 0..3. Blocks {0, 1}, {2, 3}; latent 3 is padding (only sees itself).
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 0, 0],
            [1, 1, 0, 0, 0, 0, 1, 0],
            [1, 1, 0, 0, 0, 0, 1, 1],
        ]
    )
    assert torch.equal(mask, expected)


def test_per_sample_block_sizes_give_each_row_its_own_mask():
    positions = torch.arange(8).expand(2, -1)
    valid = torch.ones(2, 8, dtype=torch.bool)
    mask = two_block_layout_mask(positions, valid, torch.tensor([2, 4]))
    assert torch.equal(mask[0], two_block_layout_mask(positions[:1], valid[:1], 2)[0])
    assert torch.equal(mask[1], two_block_layout_mask(positions[:1], valid[:1], 4)[0])


@pytest.mark.parametrize("noise_level_per", ["block", "sample"])
def test_one_noise_level_per_block_or_per_sample(noise_level_per):
    pipe = make_tiny_pipeline()
    input_ids = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(0))
    timesteps = []
    hook = pipe.transformer.register_forward_pre_hook(lambda module, args: timesteps.append(args[1]))
    try:
        prior_loss(
            pipe.transformer,
            pipe.vae,
            input_ids,
            torch.ones_like(input_ids),
            torch.tensor([2, 4, 4]),
            prompt_boundary_rate=0.0,
            noise_level_per=noise_level_per,
        )
    finally:
        hook.remove()
    noisy = timesteps[0][:, 16:]
    levels_per_row = [len(row.unique()) for row in noisy]
    # Per sample: one level a row; per block: one a block (8 blocks of 2 latents, 4 of 4).
    assert levels_per_row == ([1, 1, 1] if noise_level_per == "sample" else [8, 4, 4])


def prior_loss_with_wrong_velocity(pipe, input_ids, attention_mask, where=None):
    """
    Seeded `prior_loss` (a prompt boundary in every block) with 100 added to the predicted velocity where
    `where(t)` holds, `t` the timesteps of the noisy half; returns the loss and the number of real latents changed.
    """
    changed = []

    def perturb(module, args, kwargs, output):
        timestep = kwargs["timestep"] if "timestep" in kwargs else args[1]
        noisy_timestep = timestep[:, timestep.shape[1] // 2 :]
        select = where(noisy_timestep)
        output.sample[:, noisy_timestep.shape[1] :][select] += 100.0
        changed.append(int((select & attention_mask.bool()).sum()))

    handle = pipe.transformer.register_forward_hook(perturb, with_kwargs=True) if where is not None else None
    with torch.no_grad():
        settings = {"prompt_boundary_rate": 1.0, "generator": torch.Generator().manual_seed(0)}
        loss = prior_loss(pipe.transformer, pipe.vae, input_ids, attention_mask, 4, **settings)
    if handle is not None:
        handle.remove()
    return loss, sum(changed)


def test_prior_loss_ignores_padding_and_pinned_positions():
    pipe = make_tiny_pipeline()
    input_ids = torch.randint(3, 384, (2, 8), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    loss, _ = prior_loss_with_wrong_velocity(pipe, input_ids, attention_mask)
    changed = input_ids.clone()
    changed[1, 5:] = 7  # only padding differs
    again, _ = prior_loss_with_wrong_velocity(pipe, changed, attention_mask)
    assert torch.isfinite(loss) and torch.allclose(loss, again)

    # Pinned (prompt) positions are held at t = 0: a wrong velocity there leaves the loss unchanged.
    pinned_wrong, num_pinned = prior_loss_with_wrong_velocity(pipe, input_ids, attention_mask, lambda t: t == 0)
    assert num_pinned > 0
    torch.testing.assert_close(pinned_wrong, loss, rtol=1e-6, atol=0)
    # The same error at the noisy positions counts.
    noisy_wrong, num_noisy = prior_loss_with_wrong_velocity(pipe, input_ids, attention_mask, lambda t: t > 0)
    assert num_noisy > 0 and noisy_wrong > loss + 100


def test_vae_loss_matches_a_hand_computation():
    vae = make_tiny_pipeline().vae
    input_ids = torch.randint(3, 384, (2, 8), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    valid = attention_mask.bool()  # patch size 1: one latent per token
    deterministic = {"kl_weight": 0.01, "sample_posterior": False}

    def by_hand(encoder_input):
        posterior = vae.encode(encoder_input, attention_mask).latent_dist
        mean, logvar = posterior.mean, posterior.logvar
        log_probs = vae.decode(mean).logits.log_softmax(-1)
        token_loss = -log_probs.gather(-1, input_ids[..., None])[..., 0]
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1)
        return token_loss[valid].mean(), kl[valid].mean()

    with torch.no_grad():
        # No masking, posterior mean: reconstruction + kl_weight · KL over the real tokens only.
        losses = vae_loss(vae, input_ids, attention_mask, mask_rate=0.0, **deterministic)
        reconstruction, kl = by_hand(input_ids)
        torch.testing.assert_close(losses["reconstruction"], reconstruction)
        torch.testing.assert_close(losses["kl"], kl)
        assert losses["masked_tokens"].item() == 0.0
        torch.testing.assert_close(losses["loss"], reconstruction + 0.01 * kl)

        # Every real token masked: the encoder sees the mask id (`vocab_size`) there, padding stays.
        losses = vae_loss(vae, input_ids, attention_mask, mask_rate=1.0, masked_token_weight=0.5, **deterministic)
        reconstruction, kl = by_hand(input_ids.masked_fill(valid, 384))
        torch.testing.assert_close(losses["reconstruction"], reconstruction)
        torch.testing.assert_close(losses["masked_tokens"], reconstruction)
        torch.testing.assert_close(losses["loss"], 1.5 * reconstruction + 0.01 * kl)


@pytest.mark.parametrize("stage", ["vae", "prior"])
def test_one_step_changes_the_trained_weights_only(stage, corpus_file, tmp_path):
    config = tiny_config(stage, corpus_file, tmp_path / "out")
    torch.manual_seed(config.seed)
    from cola_diffusers.training.trainer import build_pipeline

    initial = build_pipeline(config)
    pipe, history = train(config)
    assert len(history) == 1 and all(math.isfinite(value) and abs(value) < 1e6 for value in history)
    trained, frozen = ("vae", "transformer") if stage == "vae" else ("transformer", "vae")
    trained_before = getattr(initial, trained).state_dict()
    assert any(not torch.equal(t, trained_before[k]) for k, t in getattr(pipe, trained).state_dict().items())
    frozen_before = getattr(initial, frozen).state_dict()
    assert all(torch.equal(t, frozen_before[k]) for k, t in getattr(pipe, frozen).state_dict().items())
    assert (tmp_path / "out" / "model_index.json").exists()
    # The saved tokenizer records the training length as the model's context.
    saved = json.loads((tmp_path / "out" / "tokenizer" / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == config.max_length == 16


def test_vae_finetune_trains_the_decoder_output_layer_only(corpus_file, tmp_path):
    config = tiny_config("vae_finetune", corpus_file, tmp_path / "out", max_steps=3, learn_padding=True)
    torch.manual_seed(config.seed)
    from cola_diffusers.training.dataloaders import make_dataloader
    from cola_diffusers.training.losses import vae_finetune_loss
    from cola_diffusers.training.trainer import build_pipeline

    initial = build_pipeline(config)
    pipe, history = train(config)
    before, after = initial.vae.state_dict(), pipe.vae.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"decoder.lm_head.weight", "decoder.lm_head.bias"}
    assert all(torch.equal(t, initial.transformer.state_dict()[k]) for k, t in pipe.transformer.state_dict().items())

    # The loss: cross-entropy of decoding the normalised posterior mean, over every token (padding learnt too).
    batch = next(iter(make_dataloader(None, initial, config)))
    latents = initial.vae.normalize_latents(initial.vae.encode(batch["input_ids"]).latent_dist.mode())
    logits = initial.vae.decode(latents).logits
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["input_ids"].flatten())
    loss = vae_finetune_loss(initial.vae, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(loss, expected)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["vae", "prior"])
def test_two_hundred_steps_lower_the_loss(stage, corpus_file, tmp_path):
    # The prior learns on an untrained VAE here: its posterior samples are mostly noise, its means are not.
    settings = {"sample_posterior": False} if stage == "prior" else {}
    _, history = train(tiny_config(stage, corpus_file, tmp_path, max_steps=200, **settings))
    first, last = sum(history[:20]) / 20, sum(history[-20:]) / 20
    assert last < 0.7 * first, (first, last)


def test_resumed_run_continues_like_an_uninterrupted_one(corpus_file, tmp_path):
    settings = {"max_steps": 8, "ema_decay": 0.9}
    straight_pipe, straight = train(tiny_config("prior", corpus_file, tmp_path / "straight", **settings))
    train(tiny_config("prior", corpus_file, tmp_path / "first", checkpoint_every=4, **settings))
    resumed_pipe, resumed = train(
        tiny_config(
            "prior", corpus_file, tmp_path / "second", resume_from=str(tmp_path / "first" / "checkpoint-4"), **settings
        )
    )
    # The history holds the checkpoint's losses too.
    assert resumed == pytest.approx(straight, rel=1e-5)
    # The final weights are the EMA weights: the EMA state resumes too.
    straight_weights = straight_pipe.transformer.state_dict()
    for key, value in resumed_pipe.transformer.state_dict().items():
        torch.testing.assert_close(value, straight_weights[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_processes_match_one_process_gradients(tmp_path):
    # Lines longer than `max_length`: every sample has as many tokens, so per-process means average to the global one.
    corpus_file = tmp_path / "long.txt"
    corpus_file.write_text("\n".join(f"sample {i}: the river runs past the old mill by the water" for i in range(8)))
    corpus_file = str(corpus_file)
    # Plain SGD: the weights after one step differ from the initial ones by exactly the averaged gradient.
    deterministic = {
        "mask_rate": 0.0,
        "sample_posterior": False,
        "max_steps": 1,
        "optimizer": "sgd",
        "learning_rate": 1.0,
    }
    single = tiny_config("vae", corpus_file, tmp_path / "single", **deterministic)
    train(single)
    config_path = tmp_path / "double.json"
    double = tiny_config("vae", corpus_file, tmp_path / "double", batch_size=4, **deterministic)
    config_path.write_text(json.dumps(vars(double)))
    command = [*CPU_LAUNCH, "-m", "cola_diffusers.cli", "train", "--config", str(config_path)]
    subprocess.run(
        command, check=True, capture_output=True, timeout=300, env={**os.environ, "ACCELERATE_USE_CPU": "1"}
    )
    assert json.loads((tmp_path / "double" / "loss_history.json").read_text())["num_processes"] == 2

    one = load_file(tmp_path / "single" / "vae" / "diffusion_pytorch_model.safetensors")
    two = load_file(tmp_path / "double" / "vae" / "diffusion_pytorch_model.safetensors")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)


def test_joint_stage_two_trains_both_models_and_its_reference_kl_is_the_gaussian_kl(corpus_file, tmp_path):
    config = tiny_config("prior", corpus_file, tmp_path / "out", joint_vae=True)
    torch.manual_seed(config.seed)
    from cola_diffusers.training.losses import joint_prior_loss
    from cola_diffusers.training.trainer import build_pipeline

    initial = build_pipeline(config)
    pipe, history = train(config)
    assert len(history) == 1 and math.isfinite(history[0])
    for name in ("transformer", "vae"):
        before = getattr(initial, name).state_dict()
        assert any(not torch.equal(t, before[k]) for k, t in getattr(pipe, name).state_dict().items()), name

    # KL(q || q_ref) of two diagonal Gaussians, by hand, on a fixed batch: the trained VAE against its start.
    input_ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(input_ids)
    parts = joint_prior_loss(pipe.transformer, pipe.vae, initial.vae, input_ids, mask, 4, prompt_boundary_rate=0.0)
    q = pipe.vae.encode(input_ids, mask).latent_dist
    r = initial.vae.encode(input_ids, mask).latent_dist
    by_hand = (
        0.5 * (torch.log(r.std**2 / q.std**2) + (q.std**2 + (q.mean - r.mean) ** 2) / r.std**2 - 1).sum(-1).mean()
    )
    torch.testing.assert_close(parts["reference_kl"], by_hand, rtol=1e-4, atol=1e-7)
    assert parts["reference_kl"] > 0
    negative_entropy = (-0.5 * (1 + math.log(2 * math.pi) + torch.log(q.std**2))).sum(-1).mean()
    torch.testing.assert_close(parts["negative_entropy"], negative_entropy, rtol=1e-4, atol=1e-6)
    expected = (
        (parts["reconstruction"] + 1e-4 * parts["negative_entropy"] + parts["masked_tokens"])
        + parts["flow_matching"]
        + parts["reference_kl"]
    )
    torch.testing.assert_close(parts["loss"], expected)
