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
Loopback load test of the OpenAI-compatible server (`cola-diffusers serve`) on the embedded demo model.

    python benchmarks/bench_server.py                          # 64 requests at 1, 4 and 16 concurrent clients
    python benchmarks/bench_server.py --requests 128 --concurrency 1 8 32 --time-limit 60

Starts the server in a subprocess on 127.0.0.1, sends a fixed number of completion requests ("dddd>", greedy,
16 steps) per concurrency level from that many client threads, stops a level at `--time-limit` seconds, and
reports requests/s, completion tokens/s and latency percentiles.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx


MODEL = "demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "cola_diffusers.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-name",
        MODEL,
    ]
    env = {key: value for key, value in os.environ.items() if key != "COLA_API_KEY"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the server did not start within 60 s")


def run_level(url: str, concurrency: int, num_requests: int, time_limit: float, max_tokens: int) -> dict:
    """Sends `num_requests` requests from `concurrency` threads, or as many as `time_limit` seconds allow."""
    lock = threading.Lock()
    sent, latencies, tokens, failures = [0], [], [0], [0]
    deadline = time.monotonic() + time_limit

    def client():
        with httpx.Client(base_url=url, timeout=time_limit) as http:
            while time.monotonic() < deadline:
                with lock:
                    if sent[0] == num_requests:
                        return
                    index = sent[0]
                    sent[0] += 1
                body = {"model": MODEL, "prompt": f"{index * 7919 % 10000:04d}>", "max_tokens": max_tokens}
                start = time.perf_counter()
                response = http.post("/v1/completions", json=body)
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code != 200:
                        failures[0] += 1
                        continue
                    latencies.append(elapsed)
                    tokens[0] += response.json()["usage"]["completion_tokens"]

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
        "failures": failures[0],
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "tokens_per_s": round(tokens[0] / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_max_s": round(latencies[-1], 3) if latencies else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="Requests per concurrency level.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--time-limit", type=float, default=30.0, help="Seconds per concurrency level at most.")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--output", help="Also write the results as JSON to this file.")
    args = parser.parse_args()

    port = free_port()
    server = start_server(port)
    try:
        url = f"http://127.0.0.1:{port}"
        httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": "1234>"}, timeout=60)
        results = [run_level(url, c, args.requests, args.time_limit, args.max_tokens) for c in args.concurrency]
    finally:
        server.terminate()
        server.wait()

    print(f"{'clients':>8} {'requests':>9} {'req/s':>8} {'tokens/s':>9} {'p50 s':>7} {'max s':>7}")
    for row in results:
        print(
            f"{row['concurrency']:>8} {row['requests']:>9} {row['requests_per_s']:>8} {row['tokens_per_s']:>9} "
            f"{row['latency_p50_s']:>7} {row['latency_max_s']:>7}"
        )
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"max_tokens": args.max_tokens, "results": results}, file, indent=2)


if __name__ == "__main__":
    main()
