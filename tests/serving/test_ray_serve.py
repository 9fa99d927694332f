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

"""
`cola-diffusers serve --replicas 2 --address HOST:PORT` on a Ray head started with `ray start`, on the CPU: the OpenAI
client gets the answers of the single-process server (which never imports Ray), requests spread over both replicas,
and a replica killed with SIGKILL comes back. Also the `serve run` config of `examples/` and its arguments.
"""

import dataclasses
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from cola_diffusers.cli import main
from cola_diffusers.cli.replicas import build_app

from ..cli_processes import CliProcess, start_cli
from ..conftest import REPO_ROOT, free_port


# Ray itself is imported only by the tests that use it (slow ones): the others check flags and arguments before it.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='needs "cola-diffusers[ray]"')


KEY = "change-me"
MODEL = "cola-dlm"
FLAGS = ["--model", "demo", "--served-model-name", MODEL, "--api-key", KEY]
# A Ray of the test's own, whatever $RAY_ADDRESS names.
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
ENVIRONMENT.update(HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")

# Greedy and sampled, several prompts and choices, chat; each with a seed, so that every server gives one answer.
REQUESTS = [
    {"prompt": "1234>", "max_tokens": 8},
    {"prompt": ["5678>", "90>"], "max_tokens": 8, "n": 2, "temperature": 0.8, "seed": 3},
    {"messages": [{"role": "user", "content": "4321>"}], "max_tokens": 8, "temperature": 1.0},
]


@dataclasses.dataclass
class Server:
    process: CliProcess
    url: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=KEY, max_retries=0, timeout=60)

    def log(self) -> str:
        """What the server has printed so far (kept in files: Ray writes more than a pipe holds)."""
        paths = (self.process.request["stdout"], self.process.request["stderr"])
        return "".join(Path(path).read_text(errors="replace") for path in paths)[-5000:]


def start_server(flags: list[str], environment: dict = ENVIRONMENT) -> Server:
    """`cola-diffusers serve` with `flags` on a free port, as a process forked with torch already imported."""
    port = free_port()
    process = start_cli(["serve", *flags, "--port", str(port)], env=environment)
    return Server(process, f"http://127.0.0.1:{port}")


def wait_until_healthy(server: Server, seconds: float = 300):
    """Waits until `GET /health` answers 200 (Ray Serve's proxy answers before the app is deployed)."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.process.poll() is None, server.log()
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start: " + server.log()
        time.sleep(0.5)


@dataclasses.dataclass
class RayHead:
    address: str
    process: subprocess.Popen
    environment: dict  # with the cluster's token, as `RAY_AUTH_TOKEN`


@pytest.fixture(scope="module")
def ray_head():
    """
    A Ray of the module's own, started as an operator starts one (`ray start --head --block`), with a token of its own
    and without the dashboard, which no test reads. Its raylet and workers descend from its process, in a process
    group of their own that the fixture kills at the end. Its files (and the record of the latest cluster, which a
    plain `ray.init()` would join) are in a folder of its own, its output too, removed with it.
    """
    folder = tempfile.mkdtemp(prefix="ray-")  # short: Ray's Unix sockets live under it
    log, port = Path(folder) / "ray_start.log", free_port()
    environment = {**ENVIRONMENT, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    command = ["start", "--head", "--block", f"--port={port}", f"--temp-dir={folder}"]
    command += ["--include-dashboard=false", "--disable-usage-stats"]
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", *command],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started." not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield RayHead(f"127.0.0.1:{port}", process, environment)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def servers(ray_head):
    """The single-process server and two replicas on the module's Ray, started together, with the same flags."""
    single = start_server(FLAGS)
    replicas = start_server([*FLAGS, "--replicas", "2", "--address", ray_head.address], ray_head.environment)
    try:
        for server in (single, replicas):
            wait_until_healthy(server)
        yield single, replicas
    finally:
        for server in (single, replicas):
            server.process.send_signal(signal.SIGTERM)
        for server in (single, replicas):
            server.process.wait(timeout=60)
            server.process.output()


def answers(client: openai.OpenAI, request: dict, stream: bool = False) -> list[dict]:
    """The responses (or streamed chunks) to `request`, without their ids and times."""
    create = client.chat.completions.create if "messages" in request else client.completions.create
    response = create(model=MODEL, stream=stream, **request)
    responses = response if stream else [response]
    return [answer.model_dump(exclude={"id", "created"}) for answer in responses]


def replica_of(client: openai.OpenAI) -> str:
    """The replica that answers a completion, from its `X-Replica-Id` header; the answer must be right."""
    response = client.completions.with_raw_response.create(model=MODEL, prompt="1234>", max_tokens=8)
    assert response.parse().choices[0].text == "4321"
    return response.headers["x-replica-id"]


def answering_replicas(client: openai.OpenAI, count: int, seconds: float = 300) -> Counter:
    """
    Sends 4 completions at a time, once a second, until `count` replicas have answered; every one must succeed. The
    pauses leave the CPU to a replica that is starting.
    """
    answered = Counter()
    deadline = time.monotonic() + seconds
    with ThreadPoolExecutor(4) as pool:
        while len(answered) < count:
            assert time.monotonic() < deadline, f"only {dict(answered)} answered"
            answered.update(pool.map(lambda _: replica_of(client), range(4)))
            time.sleep(1)
    return answered


def replica_pids(root: int) -> set[int]:
    """The processes of Ray Serve replicas (`ray::ServeReplica:...`) among the descendants of process `root`."""
    children, commands = defaultdict(list), {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                commands[int(entry)] = cmdline.read()
        except (ValueError, OSError):
            continue
        children[parent].append(int(entry))
    descendants, stack = set(), [root]
    while stack:
        found = children[stack.pop()]
        descendants.update(found)
        stack.extend(found)
    return {pid for pid in descendants if commands.get(pid, b"").startswith(b"ray::ServeReplica:")}


def uses_ray(pid: int) -> bool:
    """Whether process `pid` has imported Ray, whose core is a compiled library (`ray/_raylet.so`)."""
    with open(f"/proc/{pid}/maps", "rb") as maps:
        return b"/ray/_raylet" in maps.read()


@pytest.mark.slow
def test_the_replicas_answer_as_the_single_process_server(servers):
    single, replicas = (server.client() for server in servers)
    for request in REQUESTS:
        assert answers(replicas, request) == answers(single, request), request
    streamed = {"prompt": "98765>", "max_tokens": 12, "temperature": 0.5, "seed": 7}
    assert answers(replicas, streamed, stream=True) == answers(single, streamed, stream=True)
    plain = single.completions.with_raw_response.create(model=MODEL, prompt="1234>", max_tokens=8)
    assert "x-replica-id" not in plain.headers
    # Ray's core library is loaded where Ray is imported: by `--replicas`, never by the single-process server.
    assert [uses_ray(server.process.pid) for server in servers] == [False, True]
    refused = httpx.post(f"{servers[1].url}/v1/completions", json={"model": MODEL, "prompt": "1>"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    metrics = httpx.get(f"{servers[1].url}/metrics")
    assert "cola_requests_total" in metrics.text and "x-replica-id" in metrics.headers


@pytest.mark.slow
def test_requests_spread_over_both_replicas(servers):
    answered = answering_replicas(servers[1].client(), count=2)
    print(f"answers per replica: {dict(answered)}")
    assert len(answered) == 2


@pytest.mark.slow
def test_a_replica_killed_with_sigkill_comes_back(servers, ray_head):
    client = servers[1].client()
    before = set(answering_replicas(client, count=2))
    pids = replica_pids(ray_head.process.pid)
    assert len(pids) == 2, pids
    killed = min(pids)
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    after = set(answering_replicas(client, count=2))
    print(f"replica process {killed} killed; a new replica answered after {time.monotonic() - started:.1f} s")
    assert len(after & before) == 1 and len(after - before) == 1, (before, after)
    pids_after = replica_pids(ray_head.process.pid)
    assert len(pids_after) == 2 and killed not in pids_after
    assert {replica_of(client) for _ in range(8)} <= after


@pytest.mark.slow
def test_the_serve_run_config_builds_the_application():
    from ray.serve.schema import ServeDeploySchema

    from cola_diffusers.serving.ray_serve import ColaDLMServer

    config = yaml.safe_load((REPO_ROOT / "examples" / "ray_serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    module, name = application["import_path"].split(":")
    assert getattr(importlib.import_module(module), name) is build_app
    assert [deployment["name"] for deployment in application["deployments"]] == [ColaDLMServer.name]
    build_app(application["args"])


@pytest.mark.parametrize(
    "args, message",
    [
        ({"port": 9000}, "args: port is not an argument of the application; set http_options: port."),
        ({"max_queue": 0}, "args: argument --max-queue: must be an integer >= 1, got 0"),
        ({"model": "demo", "temperature": 1}, "args: unrecognized arguments: --temperature 1"),
    ],
)
def test_bad_config_args_name_the_argument(args, message):
    with pytest.raises(ValueError) as error:
        build_app(args)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--limit-concurrency", "8"], "--limit-concurrency is uvicorn's and does not apply with --replicas"),
        (["--device", "cuda:1"], "--device cuda:1: with --replicas, Ray gives each replica a GPU of its own"),
    ],
)
def test_flags_that_replicas_cannot_honour_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["serve", "--replicas", "2", "--port", "0", *flags])
    assert exit.value.code == 2 and message in capsys.readouterr().err
