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

"""The OpenAI-compatible server, run with uvicorn on loopback and queried with the `openai` client and raw HTTP."""

import contextlib
import hmac
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.demo import DEMO_MODEL_PATH
from cola_diffusers.serving import create_app

from ..conftest import FIXTURE_DIR, make_chat_pipeline, make_tiny_pipeline, save_distilled_checkpoint


API_KEY = "sk-test-key"
MODEL = "cola-demo"
CHAT_MODEL = "cola-chat"


@contextlib.contextmanager
def serve(app, **config):
    """
    Runs `app` with uvicorn (and its `config` settings) on a free loopback port in a background thread; yields its
    base URL.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def scrape(url: str) -> dict[str, float]:
    """The server's `/metrics`, parsed as Prometheus text: every sample's name (with its labels) and value."""
    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            labels = ",".join(f'{name}="{value}"' for name, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def demo_pipeline():
    pipe = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def demo_app():
    pipe = demo_pipeline()
    pipe.tokenizer.model_max_length = 256
    return create_app(pipe, MODEL, api_key=API_KEY, max_tokens_limit=128, default_max_tokens=16)


@pytest.fixture(scope="module")
def demo_url(demo_app):
    with serve(demo_app) as url:
        yield url


@pytest.fixture(scope="module")
def chat_url():
    pipe = make_chat_pipeline()
    with serve(create_app(pipe, CHAT_MODEL)) as url:
        yield url


@pytest.fixture
def client(demo_url):
    return openai.OpenAI(base_url=f"{demo_url}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture
def http(demo_url):
    with httpx.Client(base_url=demo_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        yield http


def stream_texts(stream, chat=False) -> tuple[dict[int, str], dict[int, str]]:
    """The concatenated text and the finish reason of every choice of an `openai` stream."""
    texts, finish_reasons = {}, {}
    for chunk in stream:
        for choice in chunk.choices:
            text = (choice.delta.content if chat else choice.text) or ""
            texts[choice.index] = texts.get(choice.index, "") + text
            if choice.finish_reason is not None:
                finish_reasons[choice.index] = choice.finish_reason
    return texts, finish_reasons


def test_completion(client):
    assert [model.id for model in client.models.list()] == [MODEL]
    response = client.completions.create(model=MODEL, prompt="1234>", seed=0)
    assert response.object == "text_completion" and response.model == MODEL
    assert response.choices[0].text == "4321"
    assert response.choices[0].finish_reason == "stop"
    # Five prompt tokens; four digits and the stop token.
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (5, 5, 10)


def test_finish_reasons_and_stop_strings(client):
    length = client.completions.create(model=MODEL, prompt="1234>", max_tokens=2)
    assert (length.choices[0].text, length.choices[0].finish_reason) == ("43", "length")
    stopped = client.completions.create(model=MODEL, prompt="1234>", stop=["2", "x"])
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == ("43", "stop")


def test_streaming_equals_non_streaming(client, http):
    kwargs = {
        "model": MODEL,
        "prompt": ["5678>", "90>"],
        "n": 2,
        "seed": 11,
        "temperature": 1.5,
        "max_tokens": 12,
        "extra_body": {"top_k": 4, "num_inference_steps": 8},
    }
    response = client.completions.create(**kwargs)
    texts, finish_reasons = stream_texts(client.completions.create(stream=True, **kwargs))
    assert texts == {choice.index: choice.text for choice in response.choices}
    assert finish_reasons == {choice.index: choice.finish_reason for choice in response.choices}
    assert len(texts) == 4 and all("<|" not in text for text in texts.values())

    body = {"model": MODEL, "prompt": "1234>", "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/completions", json=body) as events:
        assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
        raw = events.read().decode()
    messages = raw.split("\n\n")
    assert messages[-2:] == ["data: [DONE]", ""] and all(message.startswith("data: ") for message in messages[:-1])
    chunks = [json.loads(message[len("data: ") :]) for message in messages[:-2]]
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks[:-1]) == "4321"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_chat_on_a_base_checkpoint_sends_one_user_message_verbatim(client):
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "1234>"}], seed=0)
    assert response.choices[0].message.content == "4321"
    assert response.choices[0].finish_reason == "stop" and response.usage.prompt_tokens == 5


def test_chat_completion(chat_url):
    client = openai.OpenAI(base_url=f"{chat_url}/v1", api_key="unused", max_retries=0)
    kwargs = {
        "model": CHAT_MODEL,
        "max_tokens": 8,
        "seed": 3,
        "temperature": 0.8,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the river"}],
    }
    response = client.chat.completions.create(**kwargs)
    message = response.choices[0].message
    assert response.object == "chat.completion" and message.role == "assistant"
    assert "<|" not in message.content and response.usage.prompt_tokens > 0
    texts, finish_reasons = stream_texts(client.chat.completions.create(stream=True, **kwargs), chat=True)
    assert texts == {0: message.content} and finish_reasons == {0: response.choices[0].finish_reason}


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_batch_invariant(demo_url, http):
    before = scrape(demo_url)
    bodies = [
        {"model": MODEL, "prompt": f"{seed * 617 % 10000:04d}>", "seed": seed, "temperature": 1.0, "max_tokens": 8}
        for seed in range(16)
    ]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda body: http.post("/v1/completions", json=body), bodies))
    after = scrape(demo_url)
    alone = [http.post("/v1/completions", json=body) for body in bodies]
    assert all(response.status_code == 200 for response in together + alone)
    assert [r.json()["choices"] for r in together] == [r.json()["choices"] for r in alone]
    # Blocks of more than one row ran, and all 16 rows finished.
    blocks = after["cola_batch_rows_count"] - before["cola_batch_rows_count"]
    single_row_blocks = after['cola_batch_rows_bucket{le="1.0"}'] - before['cola_batch_rows_bucket{le="1.0"}']
    assert single_row_blocks < blocks
    assert after["cola_requests_total"] - before["cola_requests_total"] == 16


def test_requests_that_set_no_steps_or_guidance_take_the_checkpoint_defaults(tmp_path):
    pipe = make_tiny_pipeline(seed=3)
    student = ColaDLMPipeline.from_pretrained(save_distilled_checkpoint(pipe, tmp_path))
    student.set_progress_bar_config(disable=True)

    def pipeline_text(**kwargs):
        return pipe("the river", gen_length=8, generator=[torch.Generator().manual_seed(5)], **kwargs).texts[0]

    distilled, full = pipeline_text(num_inference_steps=1, guidance_scale=1.0), pipeline_text()
    assert distilled != full
    body = {"model": "student", "prompt": "the river", "max_tokens": 8, "seed": 5}
    with serve(create_app(student, "student")) as url:
        default = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        explicit = httpx.post(
            f"{url}/v1/completions", json={**body, "num_inference_steps": 16, "guidance_scale": 7.0}, timeout=30
        )
    assert default.json()["choices"][0]["text"] == distilled
    assert explicit.json()["choices"][0]["text"] == full


@pytest.mark.parametrize(
    "path,body,status,param",
    [
        ("/v1/completions", b'{"model": "cola-demo", "prompt": ', 400, None),
        ("/v1/completions", b"[1, 2]", 400, None),
        ("/v1/completions", {"model": "gpt-4", "prompt": "1234>"}, 404, "model"),
        ("/v1/completions", {"prompt": "1234>"}, 400, "model"),
        ("/v1/completions", {"model": MODEL, "prompt": "1234>", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"model": MODEL, "prompt": "1234>", "max_tokens": 129}, 400, "max_tokens"),
        ("/v1/completions", {"model": MODEL, "prompt": "1" * 250}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "1234>", "temperature": -1}, 400, "temperature"),
        ("/v1/completions", {"model": MODEL, "prompt": "1234>", "n": 0}, 400, "n"),
        ("/v1/completions", {"model": MODEL, "prompt": "1234>", "stop": ["1", "2", "3", "4", "5"]}, 400, "stop"),
        ("/v1/completions", {"model": MODEL, "prompt": "1234>", "logprobs": 2}, 400, "logprobs"),
        ("/v1/completions", {"model": MODEL, "prompt": "1234>", "logit_bias": {"4": 100}}, 400, "logit_bias"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [], "tools": []}, 400, None),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "1"}], "tools": []},
            400,
            "tools",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "1"}], "functions": []},
            400,
            "functions",
        ),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "1"}],
                "response_format": {"type": "json_object"},
            },
            400,
            "response_format",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "tool", "content": "1"}]},
            400,
            "messages.0.role",
        ),
        ("/v1/nowhere", {}, 404, None),
    ],
)
def test_bad_requests_get_openai_errors(http, path, body, status, param):
    if isinstance(body, bytes):
        response = http.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = http.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    normal = http.post("/v1/completions", json={"model": MODEL, "prompt": "1234>"})
    assert normal.json()["choices"][0]["text"] == "4321"


def test_too_long_prompts_name_their_length(http):
    response = http.post("/v1/completions", json={"model": MODEL, "prompt": ["1234>", "1" * 250]})
    assert response.status_code == 400
    assert "`prompt[1]` has 250 tokens" in response.json()["error"]["message"]


def test_api_key(demo_url, monkeypatch):
    calls = []

    def recording_compare_digest(a, b):
        calls.append((a, b))
        return hmac_compare_digest(a, b)

    hmac_compare_digest = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", recording_compare_digest)
    body = {"model": MODEL, "prompt": "1234>", "max_tokens": 4}
    assert httpx.post(f"{demo_url}/v1/completions", json=body).status_code == 401
    wrong = httpx.post(f"{demo_url}/v1/completions", json=body, headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    right = httpx.post(f"{demo_url}/v1/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert right.status_code == 200
    assert calls == [(b"sk-wrong", API_KEY.encode()), (API_KEY.encode(), API_KEY.encode())]
    assert httpx.get(f"{demo_url}/health").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{demo_url}/v1", api_key="sk-wrong", max_retries=0).models.list()


@pytest.mark.slow
def test_full_queue_answers_503_and_a_cancelled_stream_frees_its_slot():
    # A real stream on the fixture checkpoint (no stop token in sight), slowed down by a hook on the DiT.
    pipe = ColaDLMPipeline.from_pretrained(FIXTURE_DIR)
    pipe.set_progress_bar_config(disable=True)
    passes = []

    def slow_down(module, args):
        passes.append(time.monotonic())
        time.sleep(0.01)

    pipe.transformer.register_forward_pre_hook(slow_down)
    body = {"model": MODEL, "prompt": "the", "max_tokens": 400}
    app = create_app(pipe, MODEL, max_queue=1, max_tokens_limit=400)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as events:
            assert next(events.iter_lines()).startswith("data: ")
            busy = http.post("/v1/completions", json=body)
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_overloaded"
        deadline = time.monotonic() + 5
        while http.get("/health").json()["queued"]:
            assert time.monotonic() < deadline, "the cancelled stream kept its slot"
            time.sleep(0.02)
        count = len(passes)
        time.sleep(0.3)
        assert len(passes) == count, "the DiT still runs for the cancelled stream"
        short = http.post("/v1/completions", json={**body, "max_tokens": 4})
        assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] == 4


def test_the_server_tokenizes_every_prompt_once(http, tokenized):
    body = {"model": MODEL, "prompt": ["1234>", "5678>"], "n": 2, "max_tokens": 8, "seed": 0}
    completion = http.post("/v1/completions", json=body).json()
    assert [choice["text"] for choice in completion["choices"]][:2] == ["4321", "4321"]
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "1234>"}], "max_tokens": 8, "seed": 0}
    assert http.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"] == "4321"
    # Each prompt of the completion once, and the chat's rendered prompt once more.
    assert (tokenized["1234>"], tokenized["5678>"]) == (2, 1)


def test_an_unknown_model_gets_a_404_naming_the_served_one(http):
    response = http.post("/v1/completions", json={"model": "cola-dlm", "prompt": "1234>"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert error["message"] == f"The model 'cola-dlm' does not exist; this server serves '{MODEL}'."
    # A long model name is quoted by its prefix only.
    response = http.post("/v1/completions", json={"model": "x" * 100_000, "prompt": "1234>"})
    assert response.status_code == 404 and len(response.content) < 1_000
    assert "(100000 characters)" in response.json()["error"]["message"]


def test_presence_and_frequency_penalties_are_applied_per_request(http):
    body = {"model": MODEL, "prompt": "1111>", "max_tokens": 8, "seed": 0}
    plain = http.post("/v1/completions", json=body).json()["choices"]
    # What LangChain's ChatOpenAI and others send by default.
    zeros = http.post("/v1/completions", json={**body, "presence_penalty": 0, "frequency_penalty": 0.0})
    assert zeros.status_code == 200 and zeros.json()["choices"] == plain
    pipe = demo_pipeline()
    for penalties in ({"presence_penalty": 2.0}, {"frequency_penalty": 1.5}, {"presence_penalty": -1.0}):
        served = http.post("/v1/completions", json={**body, **penalties}).json()["choices"][0]["text"]
        alone = pipe("1111>", gen_length=8, generator=[torch.Generator().manual_seed(0)], **penalties).texts[0]
        assert served == alone
    refused = http.post("/v1/completions", json={**body, "frequency_penalty": 2.5})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "frequency_penalty"
