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

"""Bad input to `cola-diffusers`, through real processes: one line, exit code 2, naming the flag or file."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

from cola_diffusers.cli import main
from cola_diffusers.demo import DEMO_MODEL_PATH
from cola_diffusers.training import train

from .cli_processes import run_cli, start_cli
from .conftest import FIXTURE_DIR, needs_mounts, on_tmpfs
from .training.test_training import tiny_config


COMMAND = [sys.executable, "-m", "cola_diffusers.cli"]
ENVIRONMENT = {**os.environ, "HF_HUB_OFFLINE": "1"}


def broken_model(folder, change) -> str:
    """A copy of the demo model in `folder`, changed by `change(folder)`."""
    shutil.copytree(DEMO_MODEL_PATH, folder)
    change(folder)
    return str(folder)


def drop_a_tensor(folder):
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights = load_file(path)
    del weights["norm_out_modulation.weight"]
    save_file(weights, path)


def misspell_num_layers(folder):
    config = json.loads((folder / "transformer" / "config.json").read_text())
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "num_layers": "two"}))


def training_cases(folder) -> dict:
    """A config resuming from a truncated checkpoint, and one with a mistyped model setting."""
    (folder / "corpus.txt").write_text("\n".join(f"the river {i}" for i in range(16)))
    config = tiny_config("prior", str(folder / "corpus.txt"), folder / "run", checkpoint_every=1)
    train(config)
    weights = folder / "run" / "checkpoint-1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    resume = dataclasses.replace(config, output_dir=str(folder / "resumed"), resume_from=str(weights.parent))
    mistyped = dataclasses.replace(config, output_dir=str(folder / "new"), transformer_config={"num_layers": "two"})
    (folder / "resume.json").write_text(json.dumps(dataclasses.asdict(resume)))
    (folder / "mistyped.json").write_text(json.dumps(dataclasses.asdict(mistyped)))
    return {
        "truncated_checkpoint": (
            ["train", "--config", str(folder / "resume.json")],
            [f"`resume_from`: cannot load the checkpoint {weights.parent}"],
        ),
        "mistyped_model_setting": (
            ["train", "--config", str(folder / "mistyped.json")],
            ['`transformer_config`: `num_layers` must be an integer, got "two"'],
        ),
    }


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory):
    """Every case of bad input, run at once; returns {case: (expected texts, completed process)}."""
    folder = tmp_path_factory.mktemp("errors")
    (folder / "prompts.jsonl").write_text('{"prompt": 123}\n')
    (folder / "torn.jsonl").write_text('{"prompt": \n')
    (folder / "data").mkdir()
    (folder / "data" / "lambada.jsonl").write_text('{"id": [1], "prompt": "a", "ground_truth": "b"}\n')
    missing_tensor = broken_model(folder / "missing_tensor", drop_a_tensor)
    mistyped = broken_model(folder / "mistyped", misspell_num_layers)
    no_weights = broken_model(
        folder / "no_weights", lambda f: os.remove(f / "vae/diffusion_pytorch_model.safetensors")
    )
    torn_tokenizer = broken_model(
        folder / "torn_tokenizer", lambda f: (f / "tokenizer/tokenizer.json").write_text("{")
    )
    cases = {
        "port": (["serve", "--port", "99999"], ["--port: must be an integer from 0 to 65535, got 99999"]),
        "replicas": (["serve", "--replicas", "0"], ["--replicas: must be an integer >= 1, got 0"]),
        "device_name": (["generate", "1>", "--device", "nonsense"], ["--device: must be a device such as cpu"]),
        "device_missing": (["generate", "1>", "--device", "cuda:99"], ["--device cuda:99 is not available here"]),
        "prompt_not_a_string": (
            ["generate", "--prompt-file", str(folder / "prompts.jsonl")],
            [f"--prompt-file {folder / 'prompts.jsonl'}, line 1: a JSON line needs a 'prompt' string, got int"],
        ),
        "prompt_file_torn": (
            ["generate", "--prompt-file", str(folder / "torn.jsonl")],
            [f"--prompt-file {folder / 'torn.jsonl'}, line 1, is not valid JSON"],
        ),
        "prompt_file_folder": (["generate", "--prompt-file", str(folder)], [f"--prompt-file {folder} is a folder"]),
        "record_id_list": (
            ["eval", "run", "--tasks", "lambada", "--data", str(folder / "data"), "--output", str(folder / "out")],
            [f"Record 0 of {folder / 'data' / 'lambada.jsonl'} has an id of type list"],
        ),
        "missing_tensor": (["generate", "1>", "--model", missing_tensor], ["the transformer weights lack"]),
        "mistyped_config": (
            ["generate", "1>", "--model", mistyped],
            [f'{folder / "mistyped" / "transformer" / "config.json"}: `num_layers` must be an integer, got "two"'],
        ),
        "missing_weights": (
            ["generate", "1>", "--model", no_weights],
            [f"{folder / 'no_weights' / 'vae'} holds no weights: diffusion_pytorch_model.safetensors is missing"],
        ),
        "torn_tokenizer": (
            ["generate", "1>", "--model", torn_tokenizer],
            [f"{folder / 'torn_tokenizer' / 'tokenizer' / 'tokenizer.json'} is not valid JSON"],
        ),
        "block_length": (["generate", "1>", "--block-length", "100000"], ["--block-length: must be an integer from"]),
        "temperature_nan": (["generate", "1>", "--temperature", "nan"], ["--temperature: must be a finite number"]),
        "guidance_inf": (["generate", "1>", "--guidance", "inf"], ["--guidance: must be a finite number"]),
        "gen_length_names_the_flags": (
            ["generate", "12>", "--gen-length", "200"],
            ["--gen-length (200) leaves no room for a prompt in --max-model-len (128)", "Lower --gen-length"],
        ),
        "resume_without_a_run": (
            ["eval", "run", "--tasks", "reverse_digits", "--output", str(folder), "--resume"],
            [f"--resume: {folder} holds no run to continue"],
        ),
        **training_cases(folder),
    }
    processes = {case: start_cli(arguments, env=ENVIRONMENT, cwd=folder) for case, (arguments, _) in cases.items()}
    return {
        case: (cases[case][1], process.communicate(timeout=300), process.returncode)
        for case, process in processes.items()
    }


CASES = [
    "port",
    "replicas",
    "device_name",
    "device_missing",
    "prompt_not_a_string",
    "prompt_file_torn",
    "prompt_file_folder",
    "record_id_list",
    "missing_tensor",
    "mistyped_config",
    "missing_weights",
    "torn_tokenizer",
    "block_length",
    "temperature_nan",
    "guidance_inf",
    "gen_length_names_the_flags",
    "resume_without_a_run",
    "truncated_checkpoint",
    "mistyped_model_setting",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_with_exit_code_2(case, error_runs):
    expected, (stdout, stderr), returncode = error_runs[case]
    assert returncode == 2 and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert "error:" in last
    for text in expected:
        assert text in last, (text, last)


def test_replicas_without_ray_say_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(SystemExit) as exit:
        main(["serve", "--replicas", "2", "--port", "0"])
    error = capsys.readouterr().err
    assert exit.value.code == 2 and error.startswith("cola-diffusers: error: --replicas runs on Ray Serve")
    assert error.rstrip().endswith('pip install "cola-diffusers[ray]".'), error


@pytest.mark.slow
@needs_mounts
def test_convert_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "disk").mkdir()
    output = tmp_path / "disk" / "converted"
    convert = [*COMMAND, "convert", "--checkpoint-path", FIXTURE_DIR, "--output-path", str(output)]
    # The disk's contents after the run, listed on stderr from inside the mount: nothing is left.
    listed = ["sh", "-c", '"$@"; status=$?; ls -A "$0" >&2; exit $status', str(tmp_path / "disk"), *convert]
    result = subprocess.run(
        on_tmpfs(tmp_path / "disk", "size=64k", listed), capture_output=True, text=True, env=ENVIRONMENT
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(f"error: Cannot write {output}: No space left on device.")


def poison_a_weight(folder):
    path = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights = load_file(path)
    name = sorted(key for key, tensor in weights.items() if tensor.is_floating_point())[0]
    weights[name][0] = float("nan")
    save_file(weights, path)


@pytest.mark.slow
def test_weights_that_are_not_finite_are_warned_about(tmp_path):
    folder = broken_model(tmp_path / "nan", poison_a_weight)
    result = run_cli(["generate", "1234>", "--model", folder], env=ENVIRONMENT)
    assert result.returncode == 0, result.stderr
    assert f"{folder}: 1 vae tensor(s)" in result.stderr and "hold NaN or infinite values" in result.stderr
