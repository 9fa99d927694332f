"""Training objectives and the accelerate training loop on tiny models."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cola_diffusers.training import TrainingConfig, prior_loss, train, two_block_layout_mask, vae_loss

from .conftest import FIXTURE_DIR, make_tiny_pipeline
from .test_distributed import CPU_LAUNCH


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
        "transformer_config": {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16, "rope_dim": 8,
                               "block_size": 4},
        "vae_config": {"latent_dim": 8, "hidden_size": 32, "num_attention_heads": 2, "ffn_dim": 64,
                       "encoder_num_blocks": 1, "decoder_num_blocks": 1, "block_size": 4},
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


def test_prior_loss_ignores_padding_and_pinned_positions():
    pipe = make_tiny_pipeline()
    input_ids = torch.randint(3, 384, (2, 8))
    attention_mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    generator = torch.Generator().manual_seed(0)
    loss = prior_loss(pipe.transformer, pipe.vae, input_ids, attention_mask, 4, generator=generator)
    changed = input_ids.clone()
    changed[1, 5:] = 7  # only padding differs
    again = prior_loss(pipe.transformer, pipe.vae, changed, attention_mask, 4,
                       generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and torch.allclose(loss, again)


@pytest.mark.parametrize("stage", ["vae", "prior"])
def test_one_step_changes_the_trained_weights_only(stage, corpus_file, tmp_path):
    config = tiny_config(stage, corpus_file, tmp_path / "out")
    torch.manual_seed(config.seed)
    from cola_diffusers.training.trainer import build_pipeline

    initial = build_pipeline(config)
    pipe, history = train(config)
    assert len(history) == 1 and all(map(lambda value: value == value and abs(value) < 1e6, history))
    trained, frozen = ("vae", "transformer") if stage == "vae" else ("transformer", "vae")
    trained_before = getattr(initial, trained).state_dict()
    assert any(not torch.equal(t, trained_before[k]) for k, t in getattr(pipe, trained).state_dict().items())
    frozen_before = getattr(initial, frozen).state_dict()
    assert all(torch.equal(t, frozen_before[k]) for k, t in getattr(pipe, frozen).state_dict().items())
    assert (tmp_path / "out" / "model_index.json").exists()


@pytest.mark.parametrize("stage", ["vae", "prior"])
def test_two_hundred_steps_lower_the_loss(stage, corpus_file, tmp_path):
    pipe, history = train(tiny_config(stage, corpus_file, tmp_path, max_steps=200))
    first, last = sum(history[:20]) / 20, sum(history[-20:]) / 20
    assert last < 0.7 * first, (first, last)


def test_resumed_run_continues_like_an_uninterrupted_one(corpus_file, tmp_path):
    settings = {"max_steps": 8, "ema_decay": 0.9}
    _, straight = train(tiny_config("prior", corpus_file, tmp_path / "straight", **settings))
    train(tiny_config("prior", corpus_file, tmp_path / "first", checkpoint_every=4, **settings))
    _, resumed = train(tiny_config("prior", corpus_file, tmp_path / "second",
                                   resume_from=str(tmp_path / "first" / "checkpoint-4"), **settings))
    assert resumed == pytest.approx(straight[4:], rel=1e-5)


def test_two_processes_match_one_process_gradients(tmp_path):
    # Lines longer than `max_length`: every sample has as many tokens, so per-process means average to the global one.
    corpus_file = tmp_path / "long.txt"
    corpus_file.write_text("\n".join(f"sample {i}: the river runs past the old mill by the water" for i in range(8)))
    corpus_file = str(corpus_file)
    # Plain SGD: the weights after one step differ from the initial ones by exactly the averaged gradient.
    deterministic = {"mask_rate": 0.0, "sample_posterior": False, "max_steps": 1, "optimizer": "sgd",
                     "learning_rate": 1.0}
    single = tiny_config("vae", corpus_file, tmp_path / "single", **deterministic)
    train(single)
    config_path = tmp_path / "double.json"
    double = tiny_config("vae", corpus_file, tmp_path / "double", batch_size=4, **deterministic)
    config_path.write_text(json.dumps(vars(double)))
    command = [*CPU_LAUNCH, "-m", "cola_diffusers.cli", "train", "--config", str(config_path)]
    subprocess.run(command, check=True, capture_output=True, timeout=300, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    assert json.loads((tmp_path / "double" / "loss_history.json").read_text())["num_processes"] == 2

    one = load_file(tmp_path / "single" / "vae" / "diffusion_pytorch_model.safetensors")
    two = load_file(tmp_path / "double" / "vae" / "diffusion_pytorch_model.safetensors")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)
