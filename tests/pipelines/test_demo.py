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

"""The embedded demo model answers its held-out task, and the command line uses it by default."""

import os

import pytest

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.demo import DEMO_FAST_MODEL_PATH, DEMO_MODEL_PATH, demo_answer, demo_examples, demo_prompt
from cola_diffusers.evaluation.data import demo_records
from cola_diffusers.evaluation.generation import run_task
from cola_diffusers.evaluation.scoring import score_directory
from cola_diffusers.evaluation.settings import EvalSettings

from ..cli_processes import run_cli


def test_demo_splits_are_disjoint_and_fixed():
    train, held_out = set(demo_examples("train")), demo_examples("held_out")
    assert len(held_out) == 500 and len(train) == 9500 and not train & set(held_out)
    # The held-out split is pinned: the README's accuracy figures are measured on exactly these strings.
    assert held_out[:5] == ["9770", "3631", "7059", "0421", "9878"] and held_out[-1] == "5508"
    assert sum(int(digits) for digits in held_out) == 2355531


@pytest.mark.slow
def test_embedded_model_reverses_held_out_digits(tmp_path):
    pipe = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    pipe.set_progress_bar_config(disable=True)
    run_task(pipe, "reverse_digits", demo_records()[:100], EvalSettings(model=DEMO_MODEL_PATH), tmp_path, 100)
    # `cola-diffusers eval run --tasks reverse_digits` on all 500 strings, 5 seeds: see the README.
    assert score_directory(tmp_path)["reverse_digits"].accuracy >= 75


def test_embedded_student_reverses_held_out_digits_in_one_unguided_step(tmp_path):
    pipe = ColaDLMPipeline.from_pretrained(DEMO_FAST_MODEL_PATH)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    # The checkpoint's own defaults: no steps or guidance given.
    run_task(pipe, "reverse_digits", demo_records()[:100], EvalSettings(model=DEMO_FAST_MODEL_PATH), tmp_path, 100)
    assert score_directory(tmp_path)["reverse_digits"].accuracy >= 80
    # A prefill, then per block one pass of the 100 prompts alone (no unguided branch) and a commit.
    assert len(calls) <= 1 + 2 * 9 and set(calls) == {100}


@pytest.mark.slow
@pytest.mark.parametrize("model", [[], ["--model", "demo-fast"]], ids=["default", "demo-fast"])
def test_command_line_uses_the_embedded_model_by_default(model):
    digits = demo_examples("held_out")[0]
    result = run_cli(["generate", demo_prompt(digits), *model], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == demo_answer(digits)
