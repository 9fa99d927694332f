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

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from ..conftest import FIXTURE_DIR


# Every test loads in a fresh, offline Python process.
pytestmark = pytest.mark.slow

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def build_hub_cache(cache_dir, repo_id, source_dir):
    """Lays `source_dir` out as the Hub cache does: `models--org--name/{refs/main, snapshots/<commit>/...}`."""
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    shutil.copytree(source_dir, repo_dir / "snapshots" / COMMIT)


@pytest.mark.parametrize("layout", ["official", "diffusers"])
def test_repo_id_loads_offline_from_the_hub_cache(fixture_pipeline, tmp_path, layout):
    source = FIXTURE_DIR
    if layout == "diffusers":
        source = tmp_path / "diffusers_format"
        fixture_pipeline.save_pretrained(source)
    cache_dir = tmp_path / "hub"
    build_hub_cache(cache_dir, "cola-test/tiny-cola-dlm", source)

    script = textwrap.dedent(
        """
        import torch
        from cola_diffusers import ColaDLMPipeline

        pipe = ColaDLMPipeline.from_pretrained("cola-test/tiny-cola-dlm")
        pipe.set_progress_bar_config(disable=True)
        output = pipe("the river story.", gen_length=6, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
        print(output.sequences.tolist())
        """
    )
    environment = {**os.environ, "HF_HUB_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr

    import torch

    expected = fixture_pipeline(
        "the river story.", gen_length=6, num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    )
    assert result.stdout.strip().splitlines()[-1] == str(expected.sequences.tolist())


def test_unknown_repo_id_offline_fails_clearly(tmp_path):
    script = "from cola_diffusers import ColaDLMPipeline; ColaDLMPipeline.from_pretrained('cola-test/missing')"
    environment = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "LocalEntryNotFoundError" in result.stderr or "offline" in result.stderr.lower()
