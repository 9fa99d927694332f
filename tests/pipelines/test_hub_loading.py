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

"""Loading a Hub repo id offline from a locally built Hub cache, in both checkpoint layouts."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from ..conftest import FIXTURE_DIR


# The repo ids load in one fresh, offline Python process: the Hub cache's folder is read when huggingface_hub is
# imported.
pytestmark = pytest.mark.slow


COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_IDS = {"official": "cola-test/tiny-cola-dlm", "diffusers": "cola-test/tiny-cola-dlm-diffusers"}
MISSING = "cola-test/missing"
GENERATE = {"gen_length": 6, "num_inference_steps": 2}

LOAD = textwrap.dedent(
    f"""
    import json, sys, torch
    from cola_diffusers import ColaDLMPipeline

    loaded = {{}}
    for layout, repo_id in {REPO_IDS!r}.items():
        pipe = ColaDLMPipeline.from_pretrained(repo_id)
        pipe.set_progress_bar_config(disable=True)
        output = pipe("the river story.", generator=torch.Generator().manual_seed(0), **{GENERATE!r})
        loaded[layout] = output.sequences.tolist()
    try:
        ColaDLMPipeline.from_pretrained({MISSING!r})
    except Exception as error:
        loaded["missing"] = f"{{type(error).__name__}}: {{error}}"
    print(json.dumps(loaded))
    """
)


def build_hub_cache(cache_dir, repo_id, source_dir):
    """Lays `source_dir` out as the Hub cache does: `models--org--name/{refs/main, snapshots/<commit>/...}`."""
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    shutil.copytree(source_dir, repo_dir / "snapshots" / COMMIT)


@pytest.fixture(scope="module")
def loaded(fixture_pipeline, tmp_path_factory):
    """What a process with `HF_HUB_OFFLINE=1` and a Hub cache of both layouts loads from each repo id."""
    folder = tmp_path_factory.mktemp("hub")
    fixture_pipeline.save_pretrained(folder / "diffusers_format")
    build_hub_cache(folder / "hub", REPO_IDS["official"], FIXTURE_DIR)
    build_hub_cache(folder / "hub", REPO_IDS["diffusers"], folder / "diffusers_format")
    environment = {**os.environ, "HF_HUB_CACHE": str(folder / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", LOAD], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", ["official", "diffusers"])
def test_repo_id_loads_offline_from_the_hub_cache(fixture_pipeline, loaded, layout):
    expected = fixture_pipeline("the river story.", generator=torch.Generator().manual_seed(0), **GENERATE)
    assert loaded[layout] == expected.sequences.tolist()


def test_unknown_repo_id_offline_fails_clearly(loaded):
    assert "LocalEntryNotFoundError" in loaded["missing"] or "offline" in loaded["missing"].lower()
