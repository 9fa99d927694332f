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

"""`cola-diffusers train` on bad configs, the shipped example configs, the settings table and the demo build script."""

import dataclasses
import hashlib
import json
import logging
import os
import re

import pytest
import torch

from cola_diffusers.demo import DEMO_FAST_MODEL_PATH, DEMO_MODEL_PATH
from cola_diffusers.training import TrainingConfig, train
from cola_diffusers.training import trainer as trainer_module
from cola_diffusers.training.settings_table import settings_table

from ..cli_processes import start_cli
from ..conftest import REPO_ROOT, run_script


EXAMPLES = os.path.join(REPO_ROOT, "examples")
GOOD = {
    "stage": "vae",
    "train_file": os.path.join(EXAMPLES, "corpus.txt"),
    "output_dir": "never-written",
    "tokenizer_file": os.path.join(DEMO_MODEL_PATH, "tokenizer", "tokenizer.json"),
}
# Each bad config (None: no file; str: the file's text) and what its one-line error must say.
BAD_CONFIGS = {
    "missing_file": (None, ["training config `{path}` does not exist"]),
    "invalid_json": (
        '{\n  "stage": "vae",\n  max_steps: 3\n}',
        ["`{path}`", "not valid JSON", "line 3", "property name"],
    ),
    "not_an_object": ("[1, 2]", ["`{path}`", "JSON object"]),
    "unknown_key": (
        {**GOOD, "max_step": 3},
        ["`{path}`", "unknown training setting `max_step`; did you mean `max_steps`?"],
    ),
    "unknown_stage": (
        {**GOOD, "stage": "stage2"},
        ["`{path}`", '"vae" (Stage 1), "prior" (Stage 2), "distill", "vae_finetune" or "sft"', "stage2"],
    ),
    "no_train_file": ({k: v for k, v in GOOD.items() if k != "train_file"}, ["missing required setting `train_file`"]),
    "train_file_not_found": (
        {**GOOD, "train_file": "no/such/corpus.txt"},
        ["`train_file`", "no/such/corpus.txt", "does not exist"],
    ),
    "wrong_type": ({**GOOD, "max_steps": "10"}, ["`max_steps` must be an integer", '"10"']),
    "too_few_lines": ({**GOOD, "batch_size": 64}, ["48 non-empty lines", "`batch_size` 64"]),
    "unknown_preset": ({**GOOD, "preset": "official"}, ["`preset` must be one of", "official-cpt", '"official"']),
    "bad_block_size_probs": (
        {**GOOD, "block_sizes": [2, 4], "block_size_probs": [1.0]},
        ["`block_size_probs` must hold one non-negative weight per `block_sizes` entry (2)"],
    ),
}


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory):
    """Runs `cola-diffusers train` on every bad config at once; returns {case: (path, completed process)}."""
    folder = tmp_path_factory.mktemp("bad_configs")
    processes = {}
    for case, (content, _) in BAD_CONFIGS.items():
        path = str(folder / f"{case}.json")
        if content is not None:
            with open(path, "w") as file:
                file.write(content if isinstance(content, str) else json.dumps(content))
        processes[case] = path, start_cli(["train", "--config", path], cwd=folder)
    results = {}
    for case, (path, process) in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        results[case] = path, process.returncode, stdout, stderr
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_one_line_and_exit_code_2(case, bad_config_runs):
    path, returncode, stdout, stderr = bad_config_runs[case]
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert returncode == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("cola-diffusers: error: ")
    for expected in BAD_CONFIGS[case][1]:
        assert expected.format(path=path) in lines[0], (expected, lines[0])
    assert not os.path.exists(os.path.join(os.path.dirname(path), "never-written"))


def test_train_checks_its_inputs_before_building_models(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(trainer_module, "Accelerator", fail)
    monkeypatch.setattr(trainer_module, "build_pipeline", fail)
    config = TrainingConfig(**{**GOOD, "output_dir": str(tmp_path), "train_file": str(tmp_path / "missing.txt")})
    with pytest.raises(FileNotFoundError, match="`train_file` .*missing.txt` does not exist"):
        train(config)


def test_settings_table_in_the_docs_is_the_generated_one():
    with open(os.path.join(REPO_ROOT, "docs", "training.md"), encoding="utf-8") as file:
        doc = file.read()
    documented = re.search(
        r"<!-- settings table: start \(generated\) -->\n(.*?)<!-- settings table: end -->", doc, re.S
    )
    assert documented is not None, "docs/training.md lost its settings table markers"
    assert documented.group(1) == settings_table(), "run `python -m cola_diffusers.training.settings_table`"
    documented_names = re.findall(r"^\| `(\w+)` \|", documented.group(1), re.M)
    assert documented_names == [field.name for field in dataclasses.fields(TrainingConfig)]


def example_config(name, tmp_path, **changes):
    """An example config with its paths resolved against the repository and `output_dir` under `tmp_path`."""
    with open(os.path.join(EXAMPLES, name)) as file:
        values = json.load(file)
    for key in ("train_file", "tokenizer_file"):
        if key in values:
            values[key] = os.path.join(REPO_ROOT, values[key])
            assert os.path.isfile(values[key]), values[key]
    values.update(output_dir=str(tmp_path / values["stage"]), **changes)
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return TrainingConfig.from_json(str(path))


@pytest.mark.slow
def test_example_configs_train_stage_1_then_stage_2(tmp_path, capsys, caplog):
    vae_config = example_config("train_vae.json", tmp_path)
    with caplog.at_level(logging.WARNING, logger=trainer_module.__name__):
        vae_pipe, vae_history = train(vae_config)
        captured = capsys.readouterr()
        assert "Stage 1 (VAE)" in captured.err
        assert captured.out.strip().splitlines()[-1] == f"Stage 1 (VAE): saved to {tmp_path / 'vae'}"

        prior_pipe, prior_history = train(
            example_config("train_prior.json", tmp_path, pretrained_model=str(tmp_path / "vae"))
        )
        captured = capsys.readouterr()
        assert "Stage 2 (prior)" in captured.err
        assert captured.out.strip().splitlines()[-1] == f"Stage 2 (prior): saved to {tmp_path / 'prior'}"
    assert "untrained VAE" not in caplog.text
    assert len(vae_history) == vae_config.max_steps and len(prior_history) == 5
    # Stage 2 starts from Stage 1's VAE and keeps it frozen.
    trained_vae = vae_pipe.vae.state_dict()
    assert all(torch.equal(value, trained_vae[key]) for key, value in prior_pipe.vae.state_dict().items())
    assert (tmp_path / "prior" / "model_index.json").exists()


def test_stage_2_from_a_new_vae_warns(tmp_path, caplog):
    config = example_config("train_vae.json", tmp_path, stage="prior", max_steps=1)
    with caplog.at_level(logging.WARNING, logger=trainer_module.__name__):
        train(config)
    assert "Stage 2 trains the prior on the latents of an untrained VAE" in caplog.text


def digest(folder):
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)
    return {path: hashlib.sha256(open(path, "rb").read()).hexdigest() for path in files}


@pytest.mark.slow
def test_build_demo_model_writes_its_output_not_the_shipped_model(tmp_path, monkeypatch, capsys):
    shipped = digest(DEMO_MODEL_PATH)
    work_dir = tmp_path / "demo"
    arguments = ["--work_dir", work_dir, "--vae-steps", "1", "--prior-steps", "1"]
    assert run_script("build_demo_model.py", arguments, monkeypatch) == 0
    output = capsys.readouterr().out
    assert digest(DEMO_MODEL_PATH) == shipped
    tokenizer_config = json.loads((work_dir / "model" / "tokenizer" / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 128
    assert f"Wrote the demo model to {work_dir / 'model'}" in output


@pytest.mark.slow
def test_build_demo_model_distils_into_its_output_not_the_shipped_student(tmp_path, monkeypatch, capsys):
    shipped = digest(DEMO_FAST_MODEL_PATH)
    work_dir = tmp_path / "demo"
    arguments = ["--work-dir", work_dir, "--distill", "--distill-steps", "2", "--distill-prompts", "8"]
    assert run_script("build_demo_model.py", arguments, monkeypatch) == 0
    output = capsys.readouterr().out
    assert digest(DEMO_FAST_MODEL_PATH) == shipped
    model_index = json.loads((work_dir / "model-fast" / "model_index.json").read_text())
    assert (model_index["default_num_inference_steps"], model_index["default_guidance_scale"]) == (1, 1.0)
    assert len((work_dir / "prompts.txt").read_text().splitlines()) == 8
    assert f"Wrote the demo model to {work_dir / 'model-fast'}" in output


def test_a_preset_gives_the_official_settings_and_the_config_wins(tmp_path):
    path = tmp_path / "cpt.json"
    path.write_text(json.dumps({**GOOD, "stage": "prior", "preset": "official-cpt", "max_length": 64}))
    config = TrainingConfig.from_json(str(path))
    # The official continued pre-training: AdamW (0.9, 0.95), 1.5e-4 with 5,000 warm-up steps and a cosine, clipping
    # at 1, one logit-normal(0, 1) noise level per sample, a clean prompt boundary in 5% of the blocks.
    assert (config.adam_beta1, config.adam_beta2, config.learning_rate) == (0.9, 0.95, 1.5e-4)
    assert (config.lr_scheduler, config.lr_warmup_steps, config.max_grad_norm) == ("cosine", 5000, 1.0)
    assert (config.noise_level_per, config.logit_mean, config.prompt_boundary_rate) == ("sample", 0.0, 0.05)
    assert config.max_length == 64
    sft = TrainingConfig.from_dict({**{k: v for k, v in GOOD.items() if k != "stage"}, "preset": "official-sft"})
    assert (sft.stage, sft.block_sizes, sft.block_size_probs) == ("sft", [1, 2, 4, 8, 16], [0.1, 0.0, 0.3, 0.3, 0.3])
