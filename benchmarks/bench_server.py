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
Loopback load test of the OpenAI-compatible server (`cola-diffusers serve`) on the embedded demo model, with
identical and with mixed traffic, optionally against the server of an earlier revision in the same run.

    python benchmarks/bench_server.py                                   # 64 requests at 1, 8, 32 and 64 clients
    python benchmarks/bench_server.py --baseline 07c2e1c --concurrency 32 --output benchmarks/server

Identical traffic: every request greedy, `max_tokens` 32, not streamed. Mixed traffic: `max_tokens` drawn from
`--max-tokens-range`, temperature 0 or 0.7, a third streamed and a third with a stop string. Every request is seeded.
Reports completion tokens/s and p50/p99 latency per server, traffic and concurrency (and with `--check-alone`,
whether every request got the text it gets alone); `--output DIR` writes
`bench_server.json` and `bench_server.png` there.
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


MODEL = "demo"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, source: Path, max_batch_size: int) -> subprocess.Popen:
    """`cola-diffusers serve` of the package in `source` (a checkout's `src`), on 127.0.0.1:`port`."""
    command = [sys.executable, "-m", "cola_diffusers.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--model", MODEL, "--served-model-name", MODEL, "--max-batch-size", str(max_batch_size)]
    env = {key: value for key, value in os.environ.items() if key != "COLA_API_KEY"}
    env |= {"PYTHONPATH": str(source), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the server did not start within 120 s")


def make_bodies(traffic: str, count: int, max_tokens_range: tuple[int, int]) -> list[dict]:
    """The requests of one level: identical settings, or mixed ones (see the module docstring)."""
    pick = random.Random(0)
    bodies = []
    for index in range(count):
        body = {"model": MODEL, "prompt": f"{index * 7919 % 10000:04d}>", "seed": index}
        if traffic == "identical":
            body |= {"max_tokens": 32, "temperature": 0.0}
        else:
            body |= {"max_tokens": pick.randint(*max_tokens_range), "temperature": pick.choice([0.0, 0.7])}
            if index % 3 == 1:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            if index % 3 == 2:
                body["stop"] = [str(index % 10)]
        bodies.append(body)
    return bodies


def send(http: httpx.Client, body: dict) -> tuple[int, str]:
    """Sends one request; returns its completion tokens and text."""
    if not body.get("stream"):
        response = http.post("/v1/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"], response.json()["choices"][0]["text"]
    with http.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    text = "".join(choice["text"] for event in events for choice in event["choices"])
    return events[-1]["usage"]["completion_tokens"], text


def run_level(url: str, bodies: list[dict], concurrency: int) -> dict:
    """
    Sends `bodies` from `concurrency` client threads; throughput, latency percentiles and the texts, in the order of
    `bodies`.
    """
    lock = threading.Lock()
    queue, latencies, tokens, texts = list(reversed(list(enumerate(bodies)))), [], [0], {}

    def client():
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    index, body = queue.pop()
                start = time.perf_counter()
                completion_tokens, texts[index] = send(http, body)
                with lock:
                    latencies.append(time.perf_counter() - start)
                    tokens[0] += completion_tokens

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": round(wall, 2),
        "tokens_per_s": round(tokens[0] / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
        "texts": [texts[index] for index in range(len(bodies))],
    }


def checkout(revision: str, folder: str) -> Path:
    """A worktree of `revision` in `folder`; returns its `src`."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", folder, revision], check=True)
    return Path(folder) / "src"


def measure(name: str, source: Path, args) -> list[dict]:
    """Every traffic and concurrency level against one server."""
    port = free_port()
    server = start_server(port, source, args.max_batch_size)
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": "1234>"}, timeout=120)
        for traffic in ("identical", "mixed"):
            bodies = make_bodies(traffic, args.requests, tuple(args.max_tokens_range))
            alone = run_level(url, bodies, 1)["texts"] if args.check_alone else None
            for concurrency in args.concurrency:
                result = {"server": name, "traffic": traffic, **run_level(url, bodies, concurrency)}
                texts = result.pop("texts")
                if alone is not None:
                    # Every request's text is the one it gets when it is the only one on the server.
                    result["same_as_alone"] = texts == alone
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        server.terminate()
        server.wait()
    return results


def plot(results: list[dict], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    for server, traffic in sorted({(row["server"], row["traffic"]) for row in results}):
        rows = [row for row in results if (row["server"], row["traffic"]) == (server, traffic)]
        style = {"label": f"{server}, {traffic}", "marker": "o", "linestyle": "-" if traffic == "mixed" else "--"}
        throughput.plot([row["concurrency"] for row in rows], [row["tokens_per_s"] for row in rows], **style)
        latency.plot([row["concurrency"] for row in rows], [row["latency_p99_s"] for row in rows], **style)
    for axis, label in ((throughput, "completion tokens/s"), (latency, "p99 latency (s)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    throughput.legend()
    figure.suptitle("cola-diffusers serve, demo model, loopback")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="Requests per traffic and concurrency level.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--max-tokens-range", type=int, nargs=2, default=[8, 64], metavar=("LOW", "HIGH"))
    parser.add_argument("--max-batch-size", type=int, default=16, help="The servers' `--max-batch-size`.")
    parser.add_argument("--baseline", help="Also measure the server of this git revision, first.")
    parser.add_argument(
        "--check-alone", action="store_true", help="Check that every request gets the text it gets alone."
    )
    parser.add_argument("--output", type=Path, help="Write bench_server.json and bench_server.png into this folder.")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as folder:
        if args.baseline:
            try:
                results += measure(args.baseline, checkout(args.baseline, f"{folder}/baseline"), args)
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", f"{folder}/baseline"])
        results += measure("this checkout", REPO / "src", args)

    print(f"{'server':>14} {'traffic':>10} {'clients':>8} {'tokens/s':>9} {'p50 s':>7} {'p99 s':>7}")
    for row in results:
        print(
            f"{row['server']:>14} {row['traffic']:>10} {row['concurrency']:>8} {row['tokens_per_s']:>9} "
            f"{row['latency_p50_s']:>7} {row['latency_p99_s']:>7}"
        )
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        settings = {key: value for key, value in vars(args).items() if key != "output"}
        (args.output / "bench_server.json").write_text(
            json.dumps({"settings": settings, "results": results}, indent=2)
        )
        plot(results, args.output / "bench_server.png")


if __name__ == "__main__":
    main()
