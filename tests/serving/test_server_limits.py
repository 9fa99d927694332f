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

"""The server on an official-layout checkpoint, whose bare `tokenizer.json` records no context: its limits hold."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.serving import create_app

from ..conftest import FIXTURE_DIR
from .test_server import serve


MODEL = "cola-fixture"
LONG_PROMPT = " ".join(["word"] * 60_000)


class WorkerGate:
    """A forward pre-hook on the real DiT that counts its passes and, while closed, holds the worker in one."""

    def __init__(self, transformer):
        self.open = threading.Event()
        self.entered = threading.Event()
        self.passes = 0
        self.handle = transformer.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.passes += 1
        self.entered.set()
        assert self.open.wait(timeout=60), "the test never opened the gate"


@pytest.fixture(scope="module")
def official_pipeline():
    pipe = ColaDLMPipeline.from_pretrained(FIXTURE_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def gate(official_pipeline):
    gate = WorkerGate(official_pipeline.transformer)
    yield gate
    gate.open.set()
    gate.handle.remove()


@pytest.fixture
def url(official_pipeline, gate):
    app = create_app_for(official_pipeline)
    with serve(app) as url:
        yield url


def create_app_for(pipe, **kwargs):
    return create_app(pipe, MODEL, max_tokens_limit=4000, max_request_bytes=2**20, **kwargs)


def wait_until(condition, seconds: float, message: str):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def test_the_release_layout_gets_a_context_of_4096(official_pipeline):
    assert official_pipeline.tokenizer.model_max_length == 4096 and official_pipeline.max_sequence_length == 4096


def test_a_huge_prompt_is_refused_while_the_worker_is_busy(url, gate):
    body = {"model": MODEL, "prompt": "the river", "max_tokens": 8, "num_inference_steps": 2, "seed": 0}
    with httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(1) as pool:
        normal = pool.submit(http.post, "/v1/completions", json=body)
        assert gate.entered.wait(timeout=30), "the normal request never reached the worker"
        passes = gate.passes
        refused = http.post("/v1/completions", json={**body, "prompt": LONG_PROMPT})
        # Answered while the worker still holds the normal request, which it never left.
        assert not normal.done() and gate.passes == passes
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
        assert "300000 characters" in error["message"] or "299999 characters" in error["message"]
        chat_body = {"model": MODEL, "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 8}
        chat = http.post("/v1/chat/completions", json=chat_body)
        assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages"
        gate.open.set()
        assert normal.result().status_code == 200 and normal.result().json()["usage"]["completion_tokens"] == 8


def test_prompt_and_max_tokens_must_fit_the_context(url, gate):
    gate.open.set()
    with httpx.Client(base_url=url, timeout=60) as http:
        # 252 prompt tokens: fine alone, too long with 3,900 new tokens in a context of 4,096.
        body = {"model": MODEL, "prompt": "the " * 250, "max_tokens": 3900}
        response = http.post("/v1/completions", json=body)
        assert response.status_code == 400
        assert "has 252 tokens; at most 196 fit" in response.json()["error"]["message"]


def test_a_smaller_max_model_len_is_enforced(official_pipeline, gate):
    gate.open.set()
    with serve(create_app_for(official_pipeline, max_model_len=64)) as url:
        body = {"model": MODEL, "prompt": "the " * 30, "max_tokens": 40}
        response = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert response.status_code == 400 and "has 32 tokens; at most 24 fit" in response.json()["error"]["message"]
        no_room = httpx.post(f"{url}/v1/completions", json={**body, "max_tokens": 64}, timeout=60)
        assert no_room.status_code == 400 and no_room.json()["error"]["param"] == "max_tokens"
        assert httpx.post(f"{url}/v1/completions", json={**body, "max_tokens": 8}, timeout=60).status_code == 200


def test_an_oversized_body_gets_413_and_the_server_goes_on(url, gate):
    gate.open.set()
    body = b'{"model": "cola-fixture", "prompt": "' + b"x" * (16 * 2**20) + b'"}'
    with httpx.Client(base_url=url, timeout=30) as http:
        started = time.monotonic()
        response = http.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
        assert time.monotonic() - started < 20

        def chunks():
            yield b'{"model": "cola-fixture", "prompt": "'
            for _ in range(16):
                yield b"x" * 2**20

        chunked = http.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413
        normal = http.post("/v1/completions", json={"model": MODEL, "prompt": "the", "max_tokens": 4})
        assert normal.status_code == 200


def test_chat_with_one_user_message_equals_the_completion_of_its_text(url, gate):
    gate.open.set()
    body = {"model": MODEL, "max_tokens": 12, "seed": 7, "num_inference_steps": 4}
    with httpx.Client(base_url=url, timeout=60) as http:
        completion = http.post("/v1/completions", json={**body, "prompt": "Question: What is the capital of France?"})
        messages = [{"role": "user", "content": "Question: What is the capital of France?"}]
        chat = http.post("/v1/chat/completions", json={**body, "messages": messages})
    assert chat.json()["choices"][0]["message"]["content"] == completion.json()["choices"][0]["text"]
    assert chat.json()["usage"] == completion.json()["usage"]


def test_a_client_that_hangs_up_frees_the_worker(url, gate, official_pipeline):
    gate.open.set()
    # About 1,000 blocks of 16 steps: minutes of work unless the hang-up cancels it.
    long = {"model": MODEL, "prompt": "the", "max_tokens": 4000, "num_inference_steps": 16}
    with httpx.Client(base_url=url, timeout=60) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=long, timeout=1.0)
        wait_until(lambda: http.get("/health").json()["queued"] == 0, 10, "the abandoned request kept the worker")
        passes = gate.passes
        time.sleep(0.2)
        assert gate.passes == passes, "the DiT still runs for the abandoned request"
        normal = http.post("/v1/completions", json={"model": MODEL, "prompt": "the", "max_tokens": 4}, timeout=30)
        assert normal.status_code == 200


def test_chat_uses_the_checkpoints_chat_format(official_pipeline, gate):
    gate.open.set()
    text_pipe = ColaDLMPipeline(**official_pipeline.components, chat_format="text")
    text_pipe.set_progress_bar_config(disable=True)
    body = {"model": MODEL, "max_tokens": 8, "seed": 3, "num_inference_steps": 2}
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    with serve(create_app_for(text_pipe)) as url, httpx.Client(base_url=url, timeout=60) as http:
        chat = http.post("/v1/chat/completions", json={**body, "messages": messages}).json()
        rendered = http.post("/v1/completions", json={**body, "prompt": "User: What is 2 + 3?\nAssistant: "}).json()
        verbatim = http.post("/v1/completions", json={**body, "prompt": "What is 2 + 3?"}).json()
    assert chat["usage"]["prompt_tokens"] == rendered["usage"]["prompt_tokens"] == 26
    assert chat["choices"][0]["message"]["content"] == rendered["choices"][0]["text"].split("■")[0]
    assert chat["usage"]["prompt_tokens"] != verbatim["usage"]["prompt_tokens"]
