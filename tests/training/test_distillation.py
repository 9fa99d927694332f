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

import dataclasses
import json
import math
import os
import signal
import subprocess
import time

import pytest
import torch

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.training import TrainingConfig, train
from cola_diffusers.training.couplings import collate_couplings, teacher_couplings

from ..cli_processes import start_cli
from ..conftest import CPU_LAUNCH, FIXTURE_DIR


# Prompts of 1 to 11 tokens: with block length 4, prefixes of 0, 4 and 8 latents and 0 to 3 repainted latents.
PROMPTS = ["the", "the river", "the river story.", "Question: What is the capital of France? Answer:"]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n\n")
    return str(path)


def distill_config(prompt_file, output_dir, **overrides):
    """Distils the official-layout fixture: 4 prompts, one batch of all 4."""
    values = {
        "stage": "distill",
        "train_file": prompt_file,
        "output_dir": str(output_dir),
        "pretrained_model": FIXTURE_DIR,
        "gen_length": 8,
        "teacher_batch_size": 3,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_steps": 20,
    }
    return TrainingConfig(**{**values, **overrides})


def test_distillation_needs_a_teacher(prompt_file, tmp_path):
    with pytest.raises(ValueError, match='`stage` "distill" needs the teacher checkpoint in `pretrained_model`'):
        distill_config(prompt_file, tmp_path, pretrained_model=None, tokenizer_file="tokenizer.json")


def test_couplings_are_the_teacher_blocks_after_each_prompt():
    pipe = ColaDLMPipeline.from_pretrained(FIXTURE_DIR)
    pipe.set_progress_bar_config(disable=True)
    options = {"gen_length": 8, "num_inference_steps": 4, "guidance_scale": 3.0}
    records = teacher_couplings(
        pipe, PROMPTS, max_prompt_tokens=32, generator=torch.Generator().manual_seed(0), **options
    )

    noise = torch.randn(len(PROMPTS), 12, 8, generator=torch.Generator().manual_seed(0))
    blocks = pipe(PROMPTS, latents=noise, output_type="latent", eos_early_stop=False, **options).latents
    token_ids = pipe.tokenize(PROMPTS)
    prompt_latents, _ = pipe.encode_prompt(pipe.make_request(prompt_token_ids=token_ids, block_length=4), "cpu")
    for row, (record, ids) in enumerate(zip(records, token_ids)):
        prefix, repainted = len(ids) // 4 * 4, len(ids) % 4
        assert record["latents"].shape == record["noise"].shape == (prefix + 12, 8)
        expected_generated = [False] * (prefix + repainted) + [True] * (12 - repainted)
        assert record["generated"].tolist() == expected_generated
        # The prompt's latents (prefix and repainted), then the teacher's blocks; the prefix has no noise.
        torch.testing.assert_close(record["latents"][: prefix + repainted], prompt_latents[row, : prefix + repainted])
        torch.testing.assert_close(record["latents"][prefix + repainted :], blocks[row, repainted:])
        assert torch.equal(record["noise"][:prefix], torch.zeros(prefix, 8))
        assert torch.equal(record["noise"][prefix:], noise[row])

    batch = collate_couplings(records)
    lengths = [len(record["latents"]) for record in records]
    assert batch["latents"].shape == (4, max(lengths), 8)
    assert batch["valid"].sum(1).tolist() == lengths
    assert not batch["generated"][~batch["valid"]].any()


def test_distilling_the_official_fixture_gives_a_one_step_student(prompt_file, tmp_path):
    config = distill_config(prompt_file, tmp_path / "student")
    teacher = ColaDLMPipeline.from_pretrained(FIXTURE_DIR)
    pipe, history = train(config)
    assert len(history) == 20 and all(math.isfinite(value) for value in history)
    # One step per block: every step sees the same batch at σ = 1, so the loss falls steadily.
    assert history[-1] < 0.5 * history[0], history
    student_weights = pipe.transformer.state_dict()
    assert any(not torch.equal(value, student_weights[key]) for key, value in teacher.transformer.state_dict().items())
    teacher_vae = teacher.vae.state_dict()
    assert all(torch.equal(value, teacher_vae[key]) for key, value in pipe.vae.state_dict().items())

    student = ColaDLMPipeline.from_pretrained(tmp_path / "student")
    student.set_progress_bar_config(disable=True)
    assert isinstance(student.transformer, type(teacher.transformer))
    assert (student.config.default_num_inference_steps, student.config.default_guidance_scale) == (1, 1.0)
    assert student(PROMPTS[:2], gen_length=8).texts[0]

    # From the couplings' noise the one-step student lands nearer the guided teacher's blocks than the teacher does
    # in one step: both the guidance and the steps are folded in.
    folder = tmp_path / "student" / "couplings"
    records = [record for shard in sorted(folder.glob("shard-*.pt")) for record in torch.load(shard)]
    blocks = torch.stack([record["latents"][-12:] for record in records])
    generated = torch.stack([record["generated"][-12:] for record in records])
    noise = torch.stack([record["noise"][-12:] for record in records])

    def error(pipe):
        options = {"num_inference_steps": 1, "guidance_scale": 1.0, "eos_early_stop": False}
        latents = pipe(PROMPTS, gen_length=8, latents=noise, output_type="latent", **options).latents
        return (latents - blocks)[generated].pow(2).mean().item()

    teacher.set_progress_bar_config(disable=True)
    assert error(student) < 0.5 * error(teacher)


def test_couplings_resume_and_refuse_other_settings(prompt_file, tmp_path):
    config = distill_config(prompt_file, tmp_path / "out", max_steps=1)
    train(config)
    folder = tmp_path / "out" / "couplings"
    shards = sorted(name for name in os.listdir(folder) if name.startswith("shard-"))
    assert shards == ["shard-00000.pt", "shard-00001.pt"]
    first = torch.load(folder / "shard-00001.pt")
    # A run stopped while writing a shard left only its temporary file: the next run writes the shard again.
    os.replace(folder / "shard-00001.pt", folder / "shard-00001.pt.tmp")
    config = dataclasses.replace(config, overwrite_output_dir=True)
    train(config)
    again = torch.load(folder / "shard-00001.pt")
    for record, same in zip(first, again):
        for key in record:
            assert torch.equal(record[key], same[key])
    assert json.loads((folder / "settings.json").read_text())["teacher_guidance_scale"] == 7.0

    with pytest.raises(ValueError, match="holds couplings generated with other settings"):
        train(dataclasses.replace(config, teacher_guidance_scale=3.0))


def test_resumed_distillation_continues_like_an_uninterrupted_one(prompt_file, tmp_path):
    # Two student steps: each block draws σ from {1, 0.5}, so the resumed random state matters.
    settings = {"max_steps": 6, "num_inference_steps": 2, "batch_size": 2}
    _, straight = train(distill_config(prompt_file, tmp_path / "straight", **settings))
    train(distill_config(prompt_file, tmp_path / "first", checkpoint_every=3, **settings))
    checkpoint = str(tmp_path / "first" / "checkpoint-3")
    _, resumed = train(distill_config(prompt_file, tmp_path / "second", resume_from=checkpoint, **settings))
    assert resumed == pytest.approx(straight, rel=1e-5)


@pytest.mark.slow
def test_couplings_of_a_killed_run_resume_whole(tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(f"{prompt} {index}" for index in range(4) for prompt in PROMPTS))
    config = distill_config(str(prompt_file), tmp_path / "killed", teacher_batch_size=1, max_steps=1)
    config_file = tmp_path / "distill.json"
    config_file.write_text(json.dumps(dataclasses.asdict(config)))
    process = start_cli(["train", "--config", config_file], output=False)
    folder = tmp_path / "killed" / "couplings"
    deadline = time.monotonic() + 120
    while len(list(folder.glob("shard-*.pt"))) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = sorted(folder.glob("shard-*.pt"))
    assert 2 <= len(written) < 16
    # Every shard that exists is whole.
    assert all(len(torch.load(path)) == 1 for path in written)

    train(config)
    train(dataclasses.replace(config, output_dir=str(tmp_path / "straight")))
    for index in range(16):
        resumed = torch.load(folder / f"shard-{index:05d}.pt")
        straight = torch.load(tmp_path / "straight" / "couplings" / f"shard-{index:05d}.pt")
        for key in straight[0]:
            # The killed process may have used another thread count than this one: equal up to rounding.
            torch.testing.assert_close(resumed[0][key], straight[0][key])


@pytest.mark.slow
def test_two_processes_share_the_couplings(prompt_file, tmp_path):
    config = distill_config(prompt_file, tmp_path / "double", batch_size=2, teacher_batch_size=1, max_steps=2)
    config_file = tmp_path / "distill.json"
    config_file.write_text(json.dumps(dataclasses.asdict(config)))
    command = [*CPU_LAUNCH, "-m", "cola_diffusers.cli", "train", "--config", str(config_file)]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=environment)
    assert json.loads((tmp_path / "double" / "loss_history.json").read_text())["num_processes"] == 2

    # Each process made every other shard; together they are the shards of one process.
    train(dataclasses.replace(config, output_dir=str(tmp_path / "single"), max_steps=1))
    for index in range(4):
        two = torch.load(tmp_path / "double" / "couplings" / f"shard-{index:05d}.pt")
        one = torch.load(tmp_path / "single" / "couplings" / f"shard-{index:05d}.pt")
        for key in one[0]:
            torch.testing.assert_close(two[0][key], one[0][key])
