"""Data-parallel generation with accelerate on 2 CPU processes gives what one process gives."""

import json
import os
import subprocess
import sys

import torch

from .conftest import FIXTURE_DIR


SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "generate_distributed.py")
PROMPTS = ["the river", "Question: What is the capital of France? Answer:", "a long day", "river mountain story"]


def test_two_processes_match_one_pipeline_call(fixture_pipeline, tmp_path):
    output = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", SCRIPT,
        "--model", FIXTURE_DIR, "--output", str(output), "--gen-length", "8", "--steps", "2", "--seed", "5", *PROMPTS,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    results = json.loads(output.read_text())

    generators = [torch.Generator().manual_seed(5 + index) for index in range(len(PROMPTS))]
    expected = fixture_pipeline(PROMPTS, gen_length=8, num_inference_steps=2, guidance_scale=7.0, generator=generators)
    assert [result["prompt"] for result in results] == PROMPTS
    assert [result["token_ids"] for result in results] == expected.sequences.tolist()
    assert [result["text"] for result in results] == expected.texts
