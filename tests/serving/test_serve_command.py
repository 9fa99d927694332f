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

"""`cola-diffusers serve` in a process of its own, under load: its answers, its latency and its memory."""

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ..conftest import ADAPTER_EXAMPLE, wait_until_serving


pytestmark = pytest.mark.slow

KEY = "change-me"


def memory_kib(pid: int, field: str) -> int:
    """`VmRSS` (now) or `VmHWM` (peak) of process `pid`, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


@pytest.fixture(scope="module")
def server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "cola_diffusers.cli", "serve", "--model", "demo", "--port", str(port)]
    command += ["--served-model-name", "cola-dlm", "--api-key", KEY, "--max-rows-per-request", "8192"]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(process, url)
    yield process, url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server[1], headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
        yield http


def test_the_adapter_example_repeats_and_an_unknown_model_names_the_served_one(http):
    first, second = (http.post("/v1/chat/completions", json=ADAPTER_EXAMPLE) for _ in range(2))
    assert first.status_code == 200 and first.json()["model"] == "cola-dlm"
    assert first.json()["choices"] == second.json()["choices"]
    sampled = {"model": "cola-dlm", "prompt": "1234>", "temperature": 1.0, "max_tokens": 8}
    assert len({http.post("/v1/completions", json=sampled).json()["choices"][0]["text"] for _ in range(3)}) == 1
    unknown = http.post("/v1/completions", json={**sampled, "model": "reverse_digits"})
    assert unknown.status_code == 404 and "this server serves 'cola-dlm'" in unknown.json()["error"]["message"]


def test_a_huge_request_neither_delays_a_small_one_nor_grows_the_memory(server, http):
    process, url = server
    http.post("/v1/completions", json={"model": "cola-dlm", "prompt": "1234>", "max_tokens": 8})
    idle = memory_kib(process.pid, "VmRSS")
    huge = {"model": "cola-dlm", "prompt": ["1234>"] * 512, "n": 16, "max_tokens": 8}
    small = {"model": "cola-dlm", "prompt": "4321>", "max_tokens": 8, "seed": 0}
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, headers=http.headers, timeout=20) as client:
        pending = pool.submit(client.post, "/v1/completions", json=huge)
        time.sleep(0.5)
        started = time.monotonic()
        answered = http.post("/v1/completions", json=small)
        seconds = time.monotonic() - started
        assert answered.status_code == 200 and answered.json()["choices"][0]["text"] == "1234"
        with pytest.raises(httpx.ReadTimeout):
            pending.result()
    peak = memory_kib(process.pid, "VmHWM")
    print(f"small request: {seconds:.2f} s; idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")
    assert seconds < 5 and peak - idle < 300 * 1024


def test_slow_unauthenticated_connections_hold_nothing(server, http):
    process, url = server
    before = memory_kib(process.pid, "VmRSS")
    port = int(url.rsplit(":", 1)[1])
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    try:
        for sock in sockets:
            sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2097151\r\n\r\n" + b"x" * 1000)
        started = time.monotonic()
        served = http.post("/v1/completions", json={"model": "cola-dlm", "prompt": "1234>", "max_tokens": 8})
        assert served.status_code == 200 and time.monotonic() - started < 5
        added = memory_kib(process.pid, "VmRSS") - before
        closed = 0
        for sock in sockets:
            sock.settimeout(10)
            answer = sock.recv(65536)
            while chunk := sock.recv(65536):
                answer += chunk
            closed += answer.startswith(b"HTTP/1.1 405")
    finally:
        for sock in sockets:
            sock.close()
    print(f"300 slow connections: +{added / 1024:.1f} MiB, {closed} answered 405 and closed")
    assert closed == 300 and added < 50 * 1024
