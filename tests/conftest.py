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

import os


# One thread per process unless OMP_NUM_THREADS says otherwise: the suite's tensors are tiny, and on a busy machine
# more threads than free cores make it several times slower. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No test reaches the network: the Hub is offline unless a test says otherwise, and the command-line runs that do not
# change it share one forking process (`tests/cli_processes.py`).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import runpy  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from cola_diffusers import (
    AutoencoderKLColaText,
    ColaDLMPipeline,
    ColaTransformer1DModel,
    FlowMatchBlockCausalScheduler,
)
from cola_diffusers.loaders.tokenizer import load_tokenizer


torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The modules that take a minute or more, longest first. They run first, so that with `-n 2 --dist loadfile` (which
# hands whole modules out in collection order) the two processes end close together instead of one waiting on Ray.
LONGEST_FIRST = [
    "test_ray_serve.py",
    "test_compile.py",
    "test_docs.py",
    "test_evaluation.py",
    "test_distillation.py",
    "test_cli.py",
    "test_checkpoints.py",
    "test_lm_eval.py",
    "test_training.py",
    "test_sft.py",
]


def pytest_configure(config):
    # pytest-xdist would otherwise hand out the modules with the most tests first.
    if config.pluginmanager.hasplugin("xdist"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's tests stay in order


# The one place the tests find the repository and `tests/fixtures/` from, whatever subfolder a test module is in.
REPO_ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_DIR = str(FIXTURES / "cola_reference")
# The second official fixture: VAE without biases, pre-norm, no q/k norm, q/k/v biases; DiT q/k/v biases; block 2.
VARIANTS_DIR = str(FIXTURES / "cola_reference_variants")
REFERENCE_DIRS = {"cola_reference": FIXTURE_DIR, "cola_reference_variants": VARIANTS_DIR}

# A batch with a long prompt, a one-token prompt and one in between (models, pipelines, modular).
PROMPTS = ["Question: What is the capital of France? Answer:", "the", "the river story."]

# The official adapter's README example, verbatim.
ADAPTER_EXAMPLE = {
    "model": "cola-dlm",
    "messages": [{"role": "user", "content": "Question: What is the capital of France? Answer:"}],
    "temperature": 0,
    "max_tokens": 32,
    "stream": False,
}

# Two gloo processes on the CPU: accelerate's multi-process launcher (torchrun) with ACCELERATE_USE_CPU=1. Port 0: a
# free rendezvous port of its own. On torchrun's default port, two launches from the two test processes of `-n 2` can
# both find it free while their workers import, and then hang on each other's rendezvous.
CPU_LAUNCH = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
    "0",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_script(name: str, arguments: list, monkeypatch) -> int:
    """
    Runs `python scripts/{name} *arguments` in this process, as its `__main__` (torch and diffusers are imported
    already: a fresh interpreter would spend seconds on them); its exit status. Its output goes to `capsys`.
    """
    monkeypatch.setattr(sys, "argv", [name, *map(str, arguments)])
    try:
        runpy.run_path(str(REPO_ROOT / "scripts" / name), run_name="__main__")
    except SystemExit as exit:
        # As the interpreter exits: `sys.exit()` is 0, `sys.exit("message")` 1.
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        return 1
    return 0


def can_mount() -> bool:
    """Whether a command may run in its own mount namespace (`unshare`), where `on_tmpfs` mounts its folders."""
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def on_tmpfs(folder, options: str, command: list[str]) -> list[str]:
    """
    `command`, run with a tmpfs of mount `options` (`ro`: a read-only disk; `size=64k`: one that fills up) over
    `folder`, in a private mount namespace: the file system refuses the writes, which permissions alone do not for
    root.
    """
    mount = 'mount -t tmpfs -o "$0" tmpfs "$1" && shift && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", mount, options, str(folder), *command]


needs_mounts = pytest.mark.skipif(not can_mount(), reason="needs `unshare` to mount a tmpfs")


@dataclass
class Reference:
    """An official fixture: its folder, its traces and the module and run records of `traces.json`."""

    folder: str
    traces: dict
    modules: dict
    runs: list[dict]


@pytest.fixture(scope="session", params=list(REFERENCE_DIRS))
def reference(request):
    folder = REFERENCE_DIRS[request.param]
    with open(os.path.join(folder, "traces.json")) as file:
        records = json.load(file)
    return Reference(
        folder, load_file(os.path.join(folder, "traces.safetensors")), records["modules"], records["runs"]
    )


@pytest.fixture(scope="session")
def fixture_dir():
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def traces():
    return load_file(os.path.join(FIXTURE_DIR, "traces.safetensors"))


@pytest.fixture(scope="session")
def trace_runs():
    with open(os.path.join(FIXTURE_DIR, "traces.json")) as file:
        return json.load(file)["runs"]


@pytest.fixture(scope="session")
def fixture_pipeline():
    pipe = ColaDLMPipeline.from_pretrained(FIXTURE_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The `mid` model of `benchmarks/bench_generate.py`: DiT 4 layers x 256 (4 heads of 64), VAE 2+2 layers x 256.
MID_TRANSFORMER = {"in_channels": 16, "num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 64}
MID_VAE = {"latent_dim": 16, "hidden_size": 256, "num_attention_heads": 4, "ffn_dim": 1024, "encoder_num_blocks": 2}


def make_mid_pipeline(seed: int = 0, num_layers: int = MID_TRANSFORMER["num_layers"]) -> ColaDLMPipeline:
    """The `mid` benchmark model (or its first `num_layers` DiT layers), randomly initialised, with blocks of 16."""
    transformer_kwargs = {**MID_TRANSFORMER, "num_layers": num_layers, "rope_dim": 48, "block_size": 16}
    return make_tiny_pipeline(seed, transformer_kwargs, {**MID_VAE, "block_size": 16})


def prompt_of(pipe: ColaDLMPipeline, num_tokens: int, offset: int = 0) -> list[int]:
    """The token ids of a prompt of exactly `num_tokens` tokens, different for every `offset`."""
    words = "the river runs past the old mill and the children play by the water in the late summer light".split()
    text = " ".join(words[(offset + index) % len(words)] for index in range(num_tokens))
    return pipe.tokenizer(text)["input_ids"][:num_tokens]


def make_tiny_pipeline(seed: int = 0, transformer_kwargs: dict | None = None, vae_kwargs: dict | None = None):
    """A randomly initialised pipeline on the fixture's 384-entry tokenizer."""
    torch.manual_seed(seed)
    block_size = (transformer_kwargs or {}).get("block_size", 4)
    transformer = ColaTransformer1DModel(
        **{
            "in_channels": 8,
            "num_layers": 2,
            "num_attention_heads": 2,
            "attention_head_dim": 16,
            "rope_dim": 8,
            "block_size": block_size,
            **(transformer_kwargs or {}),
        }
    )
    vae = AutoencoderKLColaText(
        **{
            "vocab_size": 384,
            "latent_dim": 8,
            "hidden_size": 32,
            "num_attention_heads": 2,
            "ffn_dim": 64,
            "encoder_num_blocks": 1,
            "decoder_num_blocks": 2,
            "block_size": block_size,
            "scaling_factor": 1.2,
            "shifting_factor": 0.05,
            **(vae_kwargs or {}),
        }
    )
    # Random LayerNorm affines and larger weights make the tests sensitive to every parameter.
    with torch.no_grad():
        for model in (transformer, vae):
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
    pipe = ColaDLMPipeline(
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=FlowMatchBlockCausalScheduler(),
        tokenizer=load_tokenizer(os.path.join(FIXTURE_DIR, "tokenizer.json")),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_distilled_checkpoint(pipe: ColaDLMPipeline, folder) -> str:
    """Saves `pipe`'s components to `folder` as a distilled student's: 1 step per block and guidance 1 by default."""
    student = ColaDLMPipeline(**pipe.components, default_num_inference_steps=1, default_guidance_scale=1.0)
    student.save_pretrained(folder)
    return str(folder)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def make_chat_pipeline(extra_tokens: list[str] = ()) -> ColaDLMPipeline:
    """A tiny pipeline whose tokenizer has `<|im_start|>` (the fixture's lacks it) and `extra_tokens`."""
    tokenizer = load_tokenizer(os.path.join(FIXTURE_DIR, "tokenizer.json"))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *extra_tokens]})
    tiny = make_tiny_pipeline(vae_kwargs={"vocab_size": len(tokenizer)})
    pipe = ColaDLMPipeline(transformer=tiny.transformer, vae=tiny.vae, scheduler=tiny.scheduler, tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tokenized(monkeypatch):
    """Counts, per text, how often any tokenizer is called on it."""
    counts = Counter()
    call = PreTrainedTokenizerBase.__call__

    def counting(self, text=None, *args, **kwargs):
        counts.update([text] if isinstance(text, str) else list(text or []))
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", counting)
    return counts


def wait_until_serving(process, url: str, seconds: float = 120):
    """Waits until the server `process` answers `GET {url}/health`; fails with its stderr if it exits first."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.stderr.read()
        try:
            httpx.get(f"{url}/health", timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
