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

"""The habits of diffusers' training examples: `latest`, a checkpoint limit, whole checkpoints, trackers, clipping."""

import dataclasses
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from cola_diffusers.training import train
from cola_diffusers.training.trainer import build_pipeline

from ..cli_processes import run_cli, start_cli
from ..conftest import needs_mounts, on_tmpfs
from .test_training import corpus_file, tiny_config  # noqa: F401


TRAIN = [sys.executable, "-m", "cola_diffusers.cli", "train", "--config"]


def checkpoint_names(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("checkpoint-"))


def test_latest_resumes_from_the_newest_of_the_kept_checkpoints(corpus_file, tmp_path):  # noqa: F811
    # A schedule that does not depend on `max_steps`, so that a 4-step run is the start of a 6-step one.
    settings = {"max_steps": 6, "lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 3}
    _, straight = train(tiny_config("prior", corpus_file, tmp_path / "straight", **settings))
    first = tiny_config("prior", corpus_file, tmp_path / "run", checkpoint_every=1, checkpoints_total_limit=2)
    train(dataclasses.replace(first, max_steps=4, **{k: v for k, v in settings.items() if k != "max_steps"}))
    assert checkpoint_names(tmp_path / "run") == ["checkpoint-3", "checkpoint-4"]
    # `latest` takes checkpoint-4, and the learning-rate schedule resumes with the rest of the state.
    _, resumed = train(tiny_config("prior", corpus_file, tmp_path / "run", resume_from="latest", **settings))
    assert resumed == pytest.approx(straight, rel=1e-5)
    # Nothing to resume from: `latest` starts afresh.
    _, fresh = train(tiny_config("prior", corpus_file, tmp_path / "new", resume_from="latest", **settings))
    assert fresh == pytest.approx(straight, rel=1e-5)


def test_tensorboard_logs_the_loss_and_learning_rate(corpus_file, tmp_path):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = {"max_steps": 5, "lr_scheduler": "cosine", "lr_warmup_steps": 2, "report_to": "tensorboard"}
    _, history = train(tiny_config("prior", corpus_file, tmp_path / "out", **settings))
    events = EventAccumulator(str(tmp_path / "out" / "logs" / "cola-diffusers"))
    events.Reload()
    losses = events.Scalars("loss")
    assert [event.step for event in losses] == [1, 2, 3, 4, 5]
    assert [event.value for event in losses] == pytest.approx(history, rel=1e-6)
    # Warm-up over 2 steps to 3e-3, then a cosine to 0 at step 5; logged after each step's update.
    peak = 3e-3
    expected = [peak / 2, peak] + [peak * 0.5 * (1 + math.cos(math.pi * (s - 2) / 3)) for s in (3, 4, 5)]
    assert [event.value for event in events.Scalars("lr")] == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_gradient_clipping_bounds_the_step(corpus_file, tmp_path):  # noqa: F811
    # Plain SGD at learning rate 1: the weights move by exactly the clipped gradient.
    config = tiny_config("prior", corpus_file, tmp_path, optimizer="sgd", learning_rate=1.0, max_grad_norm=1e-3)
    torch.manual_seed(config.seed)
    before = build_pipeline(config).transformer.state_dict()
    pipe, _ = train(config)
    after = pipe.transformer.state_dict()
    change = torch.sqrt(sum(((after[key] - before[key]) ** 2).sum() for key in before))
    assert change.item() == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.slow
def test_a_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(corpus_file, tmp_path):  # noqa: F811
    settings = {"max_steps": 40, "checkpoint_every": 1}
    config = tiny_config("prior", corpus_file, tmp_path / "killed", **settings)
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(dataclasses.asdict(config)))
    process = start_cli(["train", "--config", config_file], output=False)
    output_dir = tmp_path / "killed"
    deadline = time.monotonic() + 120
    # Kill it while a checkpoint after the first is being written.
    while not any(name.endswith(".partial") and name != "checkpoint-1.partial" for name in _names(output_dir)):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    (partial,) = [name for name in _names(output_dir) if name.endswith(".partial")]
    step = int(partial.removesuffix(".partial").removeprefix("checkpoint-"))
    assert f"checkpoint-{step - 1}" in _names(output_dir) and f"checkpoint-{step}" not in _names(output_dir)

    _, resumed = train(dataclasses.replace(config, resume_from="latest"))
    _, straight = train(dataclasses.replace(config, output_dir=str(tmp_path / "straight"), checkpoint_every=None))
    assert resumed == pytest.approx(straight, rel=1e-5)
    assert f"checkpoint-{step}.partial" not in _names(output_dir)


def _names(folder):
    return os.listdir(folder) if os.path.isdir(folder) else []


def test_packed_rows_resume_at_the_exact_sample(tmp_path):
    # Documents of a JSONL file, packed into full rows; a run resumed with `latest` trains on the rows an
    # uninterrupted run trains on, so its losses are the same.
    data = tmp_path / "corpus.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"document {i}: " + "the river " * (i % 5)}) for i in range(40)))
    settings = {"packing": True, "max_steps": 6, "batch_size": 4}
    _, straight = train(tiny_config("prior", str(data), tmp_path / "straight", **settings))
    first = tiny_config("prior", str(data), tmp_path / "run", checkpoint_every=3, **settings)
    train(dataclasses.replace(first, max_steps=3))
    _, resumed = train(dataclasses.replace(first, resume_from="latest"))
    assert resumed == pytest.approx(straight, rel=1e-5)
    # Each row is packed full: no padding anywhere.
    from cola_diffusers.training.dataloaders import make_dataloader

    batch = next(iter(make_dataloader(Accelerator(cpu=True), build_pipeline(first), first)))
    assert batch["input_ids"].shape == (4, 16) and bool(batch["attention_mask"].all())


def test_the_validation_loss_is_logged_with_fixed_noise(corpus_file, tmp_path):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = {"validation_file": corpus_file, "validation_every": 2, "report_to": "tensorboard", "max_steps": 4}
    # A learning rate of 0: the weights do not move, so every validation loss must be the same.
    _, history = train(tiny_config("prior", corpus_file, tmp_path / "frozen", learning_rate=0.0, **settings))
    events = EventAccumulator(str(tmp_path / "frozen" / "logs" / "cola-diffusers"))
    events.Reload()
    frozen = events.Scalars("validation_loss")
    assert [event.step for event in frozen] == [2, 4]
    assert frozen[0].value == pytest.approx(frozen[1].value, rel=1e-6)
    # Validation leaves the training's random state alone: the training losses are those of a run without it.
    _, plain = train(tiny_config("prior", corpus_file, tmp_path / "plain", learning_rate=0.0, max_steps=4))
    assert history == pytest.approx(plain, rel=1e-6)


@pytest.mark.slow
def test_line_training_needs_no_datasets_and_packing_says_how_to_get_it(corpus_file, tmp_path):  # noqa: F811
    # `datasets` is an extra: hidden from a fresh interpreter, line-by-line training still runs.
    config = tiny_config("prior", corpus_file, tmp_path / "out")
    script = (
        "import sys, json; sys.modules['datasets'] = None\n"
        "from cola_diffusers.training import TrainingConfig, train\n"
        f"values = json.loads({json.dumps(json.dumps(dataclasses.asdict(config)))})\n"
        "train(TrainingConfig(**values))\n"
        "try:\n"
        "    train(TrainingConfig(**{**values, 'packing': True, 'overwrite_output_dir': True}))\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install 'cola-diffusers[train]'" in result.stdout


def write_config(config, path) -> str:
    path.write_text(json.dumps(dataclasses.asdict(config)))
    return str(path)


def newest_step(folder) -> int:
    """The step of the newest checkpoint in `folder`, complete or being written; 0 without one."""
    steps = [int(name.removesuffix(".partial").split("-")[1]) for name in _names(folder) if name.startswith("checkp")]
    return max(steps, default=0)


@pytest.mark.slow
def test_runs_killed_at_random_moments_with_one_checkpoint_kept_end_like_an_uninterrupted_run(
    corpus_file,  # noqa: F811
    tmp_path,
):
    settings = {"max_steps": 24, "checkpoint_every": 1, "checkpoints_total_limit": 1, "resume_from": "latest"}
    config = tiny_config("prior", corpus_file, tmp_path / "killed", **settings)
    command = ["train", "--config", write_config(config, tmp_path / "train.json")]
    rng = random.Random(0)
    for _ in range(10):
        started_at = newest_step(tmp_path / "killed")
        process = start_cli(command, output=False)
        deadline = time.monotonic() + 120
        # Once the run has gone past where it started, kill it a random moment later: during a save or between.
        while newest_step(tmp_path / "killed") <= started_at and process.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        complete = [name for name in _names(tmp_path / "killed") if not name.endswith(".partial")]
        assert [name for name in complete if name.startswith("checkpoint-")], "the kill lost every checkpoint"
    finished = run_cli(command)
    assert finished.returncode == 0, finished.stderr
    assert not [name for name in _names(tmp_path / "killed") if name.endswith(".partial")]

    straight = dataclasses.replace(config, output_dir=str(tmp_path / "straight"), checkpoint_every=None)
    _, losses = train(dataclasses.replace(straight, resume_from=None))
    history = json.loads((tmp_path / "killed" / "loss_history.json").read_text())["losses"]
    assert history == pytest.approx(losses, rel=1e-5)
    weights = "transformer/diffusion_pytorch_model.safetensors"
    killed, uninterrupted = load_file(tmp_path / "killed" / weights), load_file(tmp_path / "straight" / weights)
    for key, value in uninterrupted.items():
        torch.testing.assert_close(killed[key], value, rtol=1e-5, atol=1e-6)


def test_latest_with_only_an_unfinished_checkpoint_says_so_and_removes_it(corpus_file, tmp_path, caplog):  # noqa: F811
    (tmp_path / "run" / "checkpoint-12.partial").mkdir(parents=True)
    config = tiny_config("prior", corpus_file, tmp_path / "run", resume_from="latest")
    with caplog.at_level(logging.WARNING):
        _, history = train(config)
    assert "holds no complete checkpoint, only checkpoint-12.partial" in caplog.text
    assert "training starts at step 0" in caplog.text and len(history) == 1
    assert "checkpoint-12.partial" not in _names(tmp_path / "run")


def test_a_run_refuses_a_folder_that_holds_a_run_unless_resumed_or_overwritten(corpus_file, tmp_path):  # noqa: F811
    config = tiny_config("prior", corpus_file, tmp_path / "run", max_steps=2, checkpoint_every=1)
    train(config)
    with pytest.raises(ValueError, match="holds a run .*set `resume_from` to continue it or `overwrite_output_dir`"):
        train(config)
    train(dataclasses.replace(config, overwrite_output_dir=True))
    _, history = train(dataclasses.replace(config, max_steps=3, resume_from="latest"))
    # The loss history of a resumed run holds every step.
    saved = json.loads((tmp_path / "run" / "loss_history.json").read_text())["losses"]
    assert len(history) == 3 and saved == history


@pytest.mark.slow
@needs_mounts
def test_a_read_only_output_dir_is_refused_before_the_first_step(corpus_file, tmp_path):  # noqa: F811
    config = tiny_config("prior", corpus_file, tmp_path / "disk" / "run", max_steps=40)
    (tmp_path / "disk").mkdir()
    command = on_tmpfs(tmp_path / "disk", "ro", [*TRAIN, write_config(config, tmp_path / "train.json")])
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"`output_dir` `{tmp_path / 'disk' / 'run'}`: {tmp_path / 'disk'} cannot be written" in line
    assert time.monotonic() - started < 30


@pytest.mark.slow
@needs_mounts
def test_a_full_disk_while_saving_is_one_line_naming_the_folder(corpus_file, tmp_path):  # noqa: F811
    config = tiny_config("prior", corpus_file, tmp_path / "disk", max_steps=2, checkpoint_every=1)
    (tmp_path / "disk").mkdir()
    command = on_tmpfs(tmp_path / "disk", "size=48k", [*TRAIN, write_config(config, tmp_path / "train.json")])
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"cola-diffusers: error: Cannot write {tmp_path / 'disk' / 'checkpoint-1'}: ")
    assert "No space left on device" in line
    # Nothing half-written is left behind.
    assert result.stderr.count("cola-diffusers: error:") == 1
