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

"""What reaches the server before a request is generated, on a real server: keys, slow clients, bad values."""

import json
import logging
import socket
import threading
import time

import httpx
import pytest

from cola_diffusers.serving import create_app
from cola_diffusers.serving.connections import HeaderDeadlineH11Protocol

from .test_server import API_KEY, MODEL, demo_pipeline, serve


BODY_TIMEOUT = 1.0
KEEP_ALIVE = 1


@pytest.fixture(scope="module")
def gate_app():
    pipe = demo_pipeline()
    return create_app(pipe, MODEL, api_key=API_KEY, body_timeout=BODY_TIMEOUT, allowed_origins=["https://app.test"])


@pytest.fixture(scope="module")
def gate_url(gate_app):
    """The app as `cola-diffusers serve` runs it: its h11 protocol and keep-alive timeout."""
    with serve(gate_app, http=HeaderDeadlineH11Protocol, timeout_keep_alive=KEEP_ALIVE) as url:
        yield url


@pytest.fixture
def http(gate_url):
    with httpx.Client(base_url=gate_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        yield http


def raw_exchange(url: str, request: bytes, wait: float = 10.0) -> tuple[bytes, float]:
    """Sends `request` on a fresh connection; what came back until the server closed it, and after how long."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(wait)
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def test_refused_requests_are_answered_without_reading_their_body_and_their_connection_closes(gate_url):
    # A 2 MiB body announced, 3 bytes sent: nothing waits for the rest.
    for head in (b"POST /health", b"POST /v1/completions", b"POST /nowhere"):
        request = head + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2097151\r\n\r\nabc"
        answer, seconds = raw_exchange(gate_url, request)
        assert seconds < 2 and answer.split(b" ")[1] in (b"401", b"404", b"405"), answer
        assert b"connection: close" in answer.lower()
    unauthorized, _ = raw_exchange(gate_url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
    assert b"www-authenticate: Bearer" in unauthorized
    not_allowed, _ = raw_exchange(gate_url, b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
    assert b"allow: GET" in not_allowed


@pytest.mark.slow
def test_slow_bodies_get_408_and_slow_headers_are_cut_off(gate_url):
    authorization = f"Authorization: Bearer {API_KEY}\r\n".encode()
    slow_body = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + authorization + b"Content-Length: 100\r\n\r\n{"
    answer, seconds = raw_exchange(gate_url, slow_body)
    assert answer.startswith(b"HTTP/1.1 408") and BODY_TIMEOUT <= seconds < BODY_TIMEOUT + 2
    assert json.loads(answer.split(b"\r\n\r\n")[1])["error"]["code"] == "request_timeout"
    # Headers that never end, and a connection that sends nothing, are closed after the keep-alive timeout.
    for request in (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1", b""):
        answer, seconds = raw_exchange(gate_url, request)
        assert answer == b"" and KEEP_ALIVE <= seconds < KEEP_ALIVE + 2


def test_slow_clients_do_not_hold_the_server(gate_url, http):
    body = b"x" * (2**21 - 1)
    host, port = gate_url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port))) for _ in range(50)]
    try:
        for sock in sockets:
            sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:1000])
        started = time.monotonic()
        response = http.post("/v1/completions", json={"model": MODEL, "prompt": "1234>", "max_tokens": 8})
        assert response.status_code == 200 and time.monotonic() - started < 5
        for sock in sockets:
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 405")
    finally:
        for sock in sockets:
            sock.close()


def test_two_authorization_headers_are_refused(gate_url):
    headers = [("Authorization", "Bearer sk-wrong"), ("Authorization", f"Bearer {API_KEY}")]
    body = {"model": MODEL, "prompt": "1234>", "max_tokens": 4}
    response = httpx.post(f"{gate_url}/v1/completions", json=body, headers=headers)
    assert response.status_code == 401 and "one `Authorization` header, got 2" in response.json()["error"]["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_cors_preflight_of_an_allowed_origin(gate_url):
    headers = {"Origin": "https://app.test", "Access-Control-Request-Method": "POST"}
    allowed = httpx.options(f"{gate_url}/v1/completions", headers=headers)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.test"
    other = httpx.options(f"{gate_url}/v1/completions", headers={**headers, "Origin": "https://evil.test"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    "path,body,param",
    [
        ("/v1/completions", {"prompt": "1\ud800"}, "prompt"),
        ("/v1/completions", {"prompt": ["1234>", "\udfff"]}, "prompt.1"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "1\ud800"}]}, "messages.0.content"),
        ("/v1/completions", {"prompt": "1234>", "stop": "\ud800"}, "stop"),
        ("/v1/completions", {"prompt": "1234>", "model": "\ud800"}, "model"),
        ("/v1/completions", {"prompt": "1234>", "n": "2"}, "n"),
        ("/v1/completions", {"prompt": "1234>", "n": True}, "n"),
        ("/v1/completions", {"prompt": "1234>", "temperature": "0.5"}, "temperature"),
        ("/v1/completions", {"prompt": "1234>", "top_k": True}, "top_k"),
        ("/v1/completions", {"prompt": "1234>", "guidance_scale": False}, "guidance_scale"),
        ("/v1/completions", {"prompt": "1234>", "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": "1234>", "n": 2.5}, "n"),
        ("/v1/completions", {"prompt": "1234>", "stop": ["1", "2", "3", "4", "5"]}, "stop"),
    ],
)
def test_bad_values_get_a_400_naming_them(http, path, body, param):
    body = {"model": MODEL, **body}
    # Sent as the JSON escapes a client writes for lone surrogates.
    response = http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert http.post("/v1/completions", json={"model": MODEL, "prompt": "1234>"}).status_code == 200


def test_whole_floats_are_integers(http):
    body = {"model": MODEL, "prompt": "1234>", "n": 2.0, "max_tokens": 8.0, "seed": 0}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200 and [c["text"] for c in response.json()["choices"]] == ["4321", "4321"]


def test_error_bodies_quote_long_inputs_by_a_prefix(http):
    key = "k" * 1_000_000
    response = http.post("/v1/completions", json={"model": MODEL, "prompt": "1234>", key: 1})
    assert response.status_code == 400 and len(response.content) < 1_000
    assert "(1000000 characters)" in response.json()["error"]["message"]


def test_unexpected_failures_are_openai_500s(gate_app, http, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(gate_app.state.engine, "submit", fail)
    response = http.post("/v1/completions", json={"model": MODEL, "prompt": "1234>"})
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    assert "boom" not in response.text


def test_the_openapi_description_states_the_answers(gate_app, http):
    schema = http.get("/openapi.json").json()
    completions = schema["paths"]["/v1/completions"]["post"]
    assert "422" not in completions["responses"] and "HTTPValidationError" not in schema["components"]["schemas"]
    assert {"400", "401", "404", "408", "413", "503"} <= set(completions["responses"])
    assert completions["security"] == [{"bearer": []}]
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    request = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    assert request["model"]["enum"] == [MODEL] and request["n"]["maximum"] == 16


def test_a_full_queue_says_when_to_retry():
    app = create_app(demo_pipeline(), MODEL, max_queue=1)
    gate = threading.Event()
    app.state.engine.pipe.transformer.register_forward_pre_hook(lambda module, args: gate.wait(30))
    body = {"model": MODEL, "prompt": "1234>", "max_tokens": 4}
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        worker = threading.Thread(target=http.post, args=("/v1/completions",), kwargs={"json": body})
        worker.start()
        while not http.get("/health").json()["queued"]:
            time.sleep(0.01)
        busy = http.post("/v1/completions", json=body)
        gate.set()
        worker.join()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"


def test_one_log_line_per_request(http, caplog):
    def lines():
        return [record.getMessage() for record in caplog.records if record.name == "cola_diffusers.serving"]

    with caplog.at_level(logging.INFO, logger="cola_diffusers.serving"):
        http.post("/v1/completions", json={"model": MODEL, "prompt": "1234>", "seed": 0})
        http.get("/health")
        # A line is written once the answer has been sent, so it may follow the client's return.
        deadline = time.monotonic() + 5
        while len(lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = lines()
    assert len(lines) == 2
    assert '"POST /v1/completions" 200 5 tokens' in lines[0] and '"GET /health" 200 ' in lines[1]


def test_a_request_without_seed_repeats_its_answer(http):
    body = {"model": MODEL, "prompt": ["1234>", "987>"], "n": 2, "temperature": 1.0, "max_tokens": 8}
    answers = [http.post("/v1/completions", json=body).json()["choices"] for _ in range(2)]
    seeded = http.post("/v1/completions", json={**body, "seed": 0}).json()["choices"]
    assert answers[0] == answers[1] == seeded


def test_the_token_limits_follow_the_context():
    with serve(create_app(demo_pipeline(), MODEL, max_model_len=32)) as url:
        default = httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": "1"}, timeout=60)
        body = {"model": MODEL, "prompt": "1>", "max_tokens": 40}
        too_many = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        schema = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]["CompletionRequest"]
    # The default max_tokens and its limit leave room for a one-token prompt.
    assert default.status_code == 200, default.text
    assert too_many.status_code == 400 and "below the context of 32 tokens" in too_many.json()["error"]["message"]
    assert schema["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 31
