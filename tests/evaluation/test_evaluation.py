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

"""`cola-diffusers eval run`: official-format records, resumable after SIGKILL, data-parallel, reproducible."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import zlib

import pytest
import torch

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.cli import main
from cola_diffusers.demo import DEMO_MODEL_PATH
from cola_diffusers.evaluation.data import demo_records, load_records
from cola_diffusers.evaluation.generation import record_noise, record_seed, run_task
from cola_diffusers.evaluation.settings import EvalSettings, check_run_config
from cola_diffusers.evaluation.tasks import OFFICIAL_TASKS

from ..cli_processes import run_cli, start_cli
from ..conftest import CPU_LAUNCH, FIXTURE_DIR, FIXTURES, save_distilled_checkpoint


INPUTS_DIR = str(FIXTURES / "benchmark_inputs")
CLI = ["eval", "run"]
ENVIRONMENT = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}


def eval_run(*arguments, check=True):
    return run_cli([*CLI, *arguments], env=ENVIRONMENT, check=check)


def read(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


@pytest.fixture(scope="module")
def fixture_pipeline():
    pipe = ColaDLMPipeline.from_pretrained(FIXTURE_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_templates_give_the_official_prompts():
    for name, task in OFFICIAL_TASKS.items():
        for record in load_records(name, INPUTS_DIR):
            assert record.get("few_shot_prefix", "") == task.few_shot_prefix
    few_shot_prefix, prompt = OFFICIAL_TASKS["story_cloze"].render("I sat down.", choices=["I stood.", "I slept."])
    assert few_shot_prefix.startswith("Story: I wanted to make an omelet.") and few_shot_prefix.endswith("Story: ")
    assert prompt == "I sat down.\n(A) I stood.\n(B) I slept.\nEnd:"
    _, squad = OFFICIAL_TASKS["squad"].render("Who?", context="Ann came.")
    assert squad == "Ann came.\nQuestion: Who?\nAnswer:"


@pytest.mark.slow
def test_every_official_task_runs_on_the_official_layout(tmp_path):
    tasks = ",".join(OFFICIAL_TASKS)
    eval_run(
        "--model",
        FIXTURE_DIR,
        "--tasks",
        tasks,
        "--data",
        INPUTS_DIR,
        "--output",
        str(tmp_path),
        "--limit",
        "4",
        "--steps",
        "2",
        "--gen-length",
        "6",
    )
    assert json.loads((tmp_path / "run_config.json").read_text())["gen_length"] == 6
    for name in OFFICIAL_TASKS:
        inputs, results = load_records(name, INPUTS_DIR, limit=4), read(tmp_path / f"{name}.jsonl")
        assert [result["id"] for result in results] == [record["id"] for record in inputs]
        for record, result in zip(inputs, results):
            assert result["prompt"] == record["prompt"] and result["ground_truth"] == record["ground_truth"]
            assert result.get("choices") == record.get("choices") and result["seed"] == 66
            assert isinstance(result["generate"], str) and "others" not in result
    assert sorted(os.listdir(tmp_path)) == sorted([f"{name}.jsonl" for name in OFFICIAL_TASKS] + ["run_config.json"])


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_records(tmp_path):
    # One record per batch: a few seconds, time enough to kill it half-way.
    arguments = ["--tasks", "reverse_digits", "--limit", "24", "--batch-size", "1"]
    killed_dir = tmp_path / "killed"
    process = start_cli([*CLI, *arguments, "--output", killed_dir], env=ENVIRONMENT, output=False)
    part = killed_dir / "reverse_digits.part0.jsonl"
    deadline = time.monotonic() + 120
    while not (part.exists() and part.read_text().count("\n") >= 3):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = part.read_text().count("\n")
    assert 3 <= written < 24 and not (killed_dir / "reverse_digits.jsonl").exists()
    # What was written survives: mark the first result, which a resumed run must keep rather than regenerate.
    lines = part.read_text().splitlines(keepends=True)
    kept = json.loads(lines[0])
    lines[0] = json.dumps({**kept, "generate": "kept"}) + "\n"
    # A write cut short by the kill is repaired on resume.
    part.write_text("".join(lines) + '{"id": "cut sh')

    settings = EvalSettings(model=DEMO_MODEL_PATH)
    with pytest.raises(ValueError, match="pass --resume to continue it"):
        check_run_config(str(killed_dir), settings, resume=False)
    eval_run(*arguments, "--output", str(killed_dir), "--resume")
    pipe = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    pipe.set_progress_bar_config(disable=True)
    straight = run_task(pipe, "reverse_digits", demo_records()[:24], settings, tmp_path / "one", batch_size=7)
    resumed, expected = read(killed_dir / "reverse_digits.jsonl"), read(straight)
    assert [r for r in resumed if r["generate"] == "kept"] == [{**kept, "generate": "kept"}]
    assert resumed == [{**r, "generate": "kept"} if r["id"] == kept["id"] else r for r in expected]
    assert not any(name.startswith("reverse_digits.part") for name in os.listdir(killed_dir))


@pytest.mark.slow
def test_two_processes_give_the_records_of_one(tmp_path):
    tasks = ("obqa", "squad")  # a multiple-choice task and a free-text one, on the official layout
    arguments = ["--model", FIXTURE_DIR, "--tasks", ",".join(tasks), "--data", INPUTS_DIR, "--limit", "6"]
    arguments += ["--seeds", "2", "--batch-size", "2", "--steps", "4", "--gen-length", "6"]
    eval_run(*arguments, "--output", str(tmp_path / "one"))
    subprocess.run(
        [*CPU_LAUNCH, "-m", "cola_diffusers.cli", "eval", "run", *arguments, "--output", str(tmp_path / "two")],
        env=ENVIRONMENT,
        capture_output=True,
        timeout=300,
        check=True,
    )
    for name in tasks:
        one, two = read(tmp_path / "one" / f"{name}.jsonl"), read(tmp_path / "two" / f"{name}.jsonl")
        ids = [record["id"] for record in load_records(name, INPUTS_DIR, limit=6)]
        assert [(result["seed"], result["id"]) for result in one] == [(seed, i) for seed in (66, 67) for i in ids]
        assert one == two


@pytest.mark.slow
def test_demo_records_do_not_depend_on_batches_or_reruns(tmp_path):
    pipe = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    pipe.set_progress_bar_config(disable=True)
    records, settings = demo_records()[:12], EvalSettings(model=DEMO_MODEL_PATH, seeds=(66, 70))
    first = read(run_task(pipe, "reverse_digits", records, settings, tmp_path / "a", batch_size=12))
    again = read(run_task(pipe, "reverse_digits", records, settings, tmp_path / "b", batch_size=12))
    batched = read(run_task(pipe, "reverse_digits", records, settings, tmp_path / "c", batch_size=5))
    alone = read(run_task(pipe, "reverse_digits", records[7:8], settings, tmp_path / "d", batch_size=1))
    assert first == again == batched
    assert [r for r in first if r["id"] == 7] == alone
    # The seeds change the noise, and with it some answers.
    assert [r["generate"] for r in first[:12]] != [r["generate"] for r in first[12:]]


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--tasks", "lambada,nope"], "unknown task 'nope'"),
        (["--tasks", "lambada", "--data", "{empty}"], "No data file for the task 'lambada'"),
        (["--tasks", "mmlu", "--data", "{broken}"], "Record 1 of .*mmlu.jsonl \\(id 'b'\\) has no 'ground_truth'"),
        (["--tasks", "reverse_digits", "--limit", "0"], "--limit: must be an integer >= 1, got 0"),
        (["--tasks", "reverse_digits", "--output", "{official}"], "holds results without a run_config.json"),
    ],
)
def test_bad_input_is_named_before_any_model_work(tmp_path, capsys, arguments, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "mmlu.jsonl").write_text(
        '{"id": "a", "prompt": "x", "ground_truth": "y"}\n{"id": "b", "prompt": "x"}\n'
    )
    shutil.copytree(INPUTS_DIR, tmp_path / "official")
    folders = {"{empty}": tmp_path / "empty", "{broken}": tmp_path / "broken", "{official}": tmp_path / "official"}
    arguments = [str(folders.get(argument, argument)) for argument in arguments]
    if "--output" not in arguments:
        arguments += ["--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "run", "--model", "no-such/checkpoint", *arguments])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    # Refused before the model (a Hub id that cannot be reached) was even looked for.
    assert not (tmp_path / "out").exists()


def test_the_run_records_the_steps_and_guidance_of_the_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    demo = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    assert EvalSettings(model=DEMO_MODEL_PATH).resolved(demo).num_inference_steps == 16
    student = save_distilled_checkpoint(demo, tmp_path / "student")
    arguments = ["eval", "run", "--model", student, "--tasks", "reverse_digits", "--limit", "2"]
    arguments += ["--output", str(tmp_path / "out")]
    main(arguments)
    recorded = json.loads((tmp_path / "out" / "run_config.json").read_text())
    assert (recorded["num_inference_steps"], recorded["guidance_scale"]) == (1, 1.0)
    # A resumed run without flags resolves the same values; one with other steps is refused.
    main([*arguments, "--resume"])
    with pytest.raises(SystemExit):
        main([*arguments, "--resume", "--steps", "16"])
    assert "num_inference_steps: 1 there, 16 now" in capsys.readouterr().err


def test_score_command_prints_and_writes_the_summary(tmp_path, capsys):
    shutil.copytree(FIXTURES / "official_outputs_excerpt", tmp_path / "out")
    main(["eval", "score", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    rows = (tmp_path / "out" / "accuracy_summary.csv").read_text().splitlines()
    assert rows[0] == "task,accuracy" and rows[-1].startswith("tasks_average,")
    assert "LAMBADA" in printed and rows[-1].split(",")[1] in printed.splitlines()[-2]


def test_noise_is_seeded_per_record_and_block_as_the_official_driver():
    pipe = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    block_length, latent_dim = pipe.transformer.config.block_size, pipe.transformer.config.in_channels
    noise = record_noise(pipe, 3, 66, 2, torch.device("cpu"))
    for block, offset in enumerate((0, 10_000_000)):
        generator = torch.Generator().manual_seed(66 + 3 * 1_000 + offset)
        expected = torch.randn(block_length, latent_dim, generator=generator)
        assert torch.equal(noise[block * block_length : (block + 1) * block_length], expected)
    # A text id (SQuAD's) counts as its CRC-32.
    assert record_seed("56be4db0acb8001400a502ec") == zlib.crc32(b"56be4db0acb8001400a502ec") and record_seed("7") == 7


@pytest.mark.slow
def test_more_seeds_on_a_finished_run_generate_only_the_new_ones(tmp_path):
    command = [*CLI, "--tasks", "reverse_digits", "--limit", "4", "--output", tmp_path / "run", "--gen-length", "8"]
    first = run_cli(command)
    assert first.returncode == 0, first.stderr
    before = [json.loads(line) for line in (tmp_path / "run" / "reverse_digits.jsonl").read_text().splitlines()]
    more = run_cli([*command, "--resume", "--seeds", "2"])
    assert more.returncode == 0, more.stderr
    after = [json.loads(line) for line in (tmp_path / "run" / "reverse_digits.jsonl").read_text().splitlines()]
    assert [record for record in after if record["seed"] == 66] == before
    assert sorted({record["seed"] for record in after}) == [66, 67] and len(after) == 8

    # Scoring into another folder leaves the results' folder as it was.
    names = sorted(os.listdir(tmp_path / "run"))
    scored = run_cli(["eval", "score", tmp_path / "run", "--output", tmp_path / "scores"])
    assert scored.returncode == 0, scored.stderr
    assert sorted(os.listdir(tmp_path / "run")) == names and (tmp_path / "scores" / "accuracy_summary.csv").exists()
