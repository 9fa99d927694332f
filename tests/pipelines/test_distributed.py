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

"""Data-parallel generation with accelerate on 2 CPU processes gives what one process gives."""

import json
import os
import subprocess

import pytest
import torch

from ..conftest import CPU_LAUNCH, FIXTURE_DIR, REPO_ROOT


# Launches two processes.
pytestmark = pytest.mark.slow


SCRIPT = os.path.join(REPO_ROOT, "examples", "generate_distributed.py")
PROMPTS = ["the river", "Question: What is the capital of France? Answer:", "a long day", "river mountain story"]


def test_two_processes_match_one_pipeline_call(fixture_pipeline, tmp_path):
    output = tmp_path / "results.json"
    command = [
        *CPU_LAUNCH,
        SCRIPT,
        "--model",
        FIXTURE_DIR,
        "--output",
        str(output),
        "--gen-length",
        "8",
        "--steps",
        "2",
        "--seed",
        "5",
        *PROMPTS,
    ]
    subprocess.run(
        command, check=True, capture_output=True, timeout=300, env={**os.environ, "ACCELERATE_USE_CPU": "1"}
    )
    results = json.loads(output.read_text())
    assert {result["process"] for result in results} == {0, 1}

    generators = [torch.Generator().manual_seed(5 + index) for index in range(len(PROMPTS))]
    expected = fixture_pipeline(PROMPTS, gen_length=8, num_inference_steps=2, guidance_scale=7.0, generator=generators)
    assert [result["prompt"] for result in results] == PROMPTS
    assert [result["token_ids"] for result in results] == expected.sequences.tolist()
    assert [result["text"] for result in results] == expected.texts
