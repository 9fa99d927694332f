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
Continuous batching on a real server: requests of different lengths and settings join a running batch between two
blocks and give what they give alone; large requests take turns; a full queue is refused at once.
"""

import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from cola_diffusers.serving import create_app

from .test_server import MODEL, demo_pipeline, scrape, serve


MAX_BATCH_SIZE = 4


@pytest.fixture(scope="module")
def split_app():
    return create_app(demo_pipeline(), MODEL, max_batch_size=MAX_BATCH_SIZE, max_rows_per_request=512)


@pytest.fixture(scope="module")
def split_url(split_app):
    with serve(split_app) as url:
        yield url


def blocks_run(url: str) -> float:
    return scrape(url)["cola_batch_rows_count"]


def test_a_request_of_more_rows_than_allowed_is_refused_before_any_model_work(split_url):
    before = scrape(split_url)
    with httpx.Client(base_url=split_url, timeout=30) as http:
        body = {"model": MODEL, "prompt": ["1234>"] * 128, "n": 5, "max_tokens": 8}
        response = http.post("/v1/completions", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "prompt" and "at most 512 completions" in error["message"]
        assert "128 x 5 = 640" in error["message"]
        one_prompt = http.post("/v1/completions", json={**body, "prompt": "1234>", "n": 16, "stream": True})
        assert one_prompt.status_code == 400 and one_prompt.json()["error"]["param"] == "n"
        assert f"streamed request may ask for at most {MAX_BATCH_SIZE}" in one_prompt.json()["error"]["message"]
    after = scrape(split_url)
    assert (after["cola_requests_total"], after["cola_batch_rows_count"]) == (
        before["cola_requests_total"],
        before["cola_batch_rows_count"],
    )


def mixed_requests(count: int) -> list[dict]:
    """Seeded requests of different lengths, temperatures, stops, guidance scales and penalties."""
    pick = random.Random(0)
    bodies = []
    for seed in range(count):
        body = {"model": MODEL, "prompt": f"{pick.randrange(10**4):04d}>", "seed": seed}
        body |= {"max_tokens": pick.choice([4, 8, 12, 16, 24, 32]), "temperature": pick.choice([0.0, 0.7])}
        body |= {"guidance_scale": pick.choice([1.0, 7.0]), "frequency_penalty": pick.choice([0.0, 1.0])}
        if seed % 3 == 0:
            body["stop"] = [str(seed % 10)]
        bodies.append(body)
    return bodies


def pipeline_choice(pipe, body: dict) -> tuple[str, str, int]:
    """What the pipeline gives `body` alone, with the seed's generator: text, finish reason, tokens."""
    settings = {"gen_length": body["max_tokens"], "temperature": body["temperature"], "stop": body.get("stop")}
    settings |= {"guidance_scale": body["guidance_scale"], "frequency_penalty": body["frequency_penalty"]}
    generator = [torch.Generator().manual_seed(body["seed"])]
    output = pipe(body["prompt"], generator=generator, **settings)
    return output.texts[0], output.finish_reasons[0], output.num_tokens[0]


@pytest.mark.slow
def test_requests_that_join_a_running_batch_give_what_they_give_alone(split_url):
    bodies = mixed_requests(24)
    before = scrape(split_url)

    def send(index_body):
        index, body = index_body
        # Arrivals spread over the blocks of the requests before them.
        time.sleep(0.05 * index)
        return httpx.post(f"{split_url}/v1/completions", json=body, timeout=120)

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(send, enumerate(bodies)))
    after = scrape(split_url)
    assert all(response.status_code == 200 for response in responses), [r.text for r in responses]
    served = [
        (c["text"], c["finish_reason"], r.json()["usage"]["completion_tokens"])
        for r in responses
        for c in r.json()["choices"]
    ]
    pipe = demo_pipeline()
    assert served == [pipeline_choice(pipe, body) for body in bodies]
    # Rows shared their blocks: fewer blocks ran than the requests ran rows of blocks.
    blocks = after["cola_batch_rows_count"] - before["cola_batch_rows_count"]
    row_blocks = after["cola_batch_rows_sum"] - before["cola_batch_rows_sum"]
    assert blocks < row_blocks / 2 and blocks < len(bodies) * 2
    finished = sum(
        after[name] - before.get(name, 0) for name in after if name.startswith("cola_requests_finished_total")
    )
    assert finished == len(bodies)


@pytest.mark.slow
def test_a_short_request_finishes_while_a_large_one_takes_turns(split_url):
    sampled = {"model": MODEL, "prompt": ["1234>", "567>", "89>"], "n": 3, "seed": 4, "temperature": 1.0}
    large = {**sampled, "prompt": sampled["prompt"] * 4, "max_tokens": 8}
    small = {"model": MODEL, "prompt": "4321>", "max_tokens": 4, "seed": 0}
    with httpx.Client(base_url=split_url, timeout=60) as client, ThreadPoolExecutor(1) as pool:
        ran = blocks_run(split_url)
        pending = pool.submit(client.post, "/v1/completions", json=large)
        while blocks_run(split_url) == ran:
            time.sleep(0.01)
        answered = client.post("/v1/completions", json=small)
        assert answered.status_code == 200 and answered.json()["choices"][0]["text"] == "1234"
        assert not pending.done(), "the large request ended before the small one was answered"
        split = pending.result()
    assert split.status_code == 200 and len(split.json()["choices"]) == 36
    # Each row's text is the one it gets in a server that runs its request alone in a batch of 16 rows.
    with serve(create_app(demo_pipeline(), MODEL)) as url:
        whole = httpx.post(f"{url}/v1/completions", json={**large, "prompt": large["prompt"][:3]}, timeout=60)
    texts = [choice["text"] for choice in split.json()["choices"]]
    assert texts[:9] == [choice["text"] for choice in whole.json()["choices"]]


@pytest.mark.slow
def test_a_client_that_hangs_up_stops_the_rest_of_its_rows(split_url):
    large = {"model": MODEL, "prompt": ["1234>"] * 128, "n": 4, "max_tokens": 8}
    with httpx.Client(base_url=split_url, timeout=60) as client:
        before = blocks_run(split_url)
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/completions", json=large, timeout=1.0)
        deadline = time.monotonic() + 10
        while client.get("/health").json()["queued"]:
            assert time.monotonic() < deadline, "the abandoned request kept its slot"
            time.sleep(0.05)
        ran = blocks_run(split_url)
        time.sleep(0.3)
        assert blocks_run(split_url) == ran < before + 128 * 4 // MAX_BATCH_SIZE


@pytest.mark.slow
def test_a_full_queue_is_refused_at_once_and_the_server_serves_again_once_it_drains():
    pipe = demo_pipeline()
    # Each request fills the batch and takes a second or more, mostly asleep: the refusals come while both are there.
    pipe.transformer.register_forward_pre_hook(lambda module, args: time.sleep(0.02))
    app = create_app(pipe, MODEL, max_queue=2, max_batch_size=MAX_BATCH_SIZE)
    long = {"model": MODEL, "prompt": ["1234>"] * MAX_BATCH_SIZE, "max_tokens": 8}
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(2) as pool:
        running = [pool.submit(http.post, "/v1/completions", json=long) for _ in range(2)]
        while http.get("/health").json()["queued"] < 2 or not http.get("/health").json()["running_rows"]:
            time.sleep(0.01)
        refusals = [http.post("/v1/completions", json=long) for _ in range(5)]
        # Refused at once: answered while the queued request has not even started.
        assert not all(response.done() for response in running)
        assert [(busy.status_code, busy.headers.get("retry-after")) for busy in refusals] == [(503, "1")] * 5
        assert {busy.json()["error"]["code"] for busy in refusals} == {"server_overloaded"}
        assert all(response.result().status_code == 200 for response in running)
        again = http.post("/v1/completions", json={"model": MODEL, "prompt": "1234>", "max_tokens": 8, "seed": 0})
        assert again.status_code == 200 and again.json()["choices"][0]["text"] == "4321"
        metrics = scrape(url)
    assert (metrics["cola_requests_total"], metrics["cola_requests_rejected_total"]) == (3, 5)
    assert metrics['cola_requests_finished_total{finish_reason="stop"}'] == 2 * MAX_BATCH_SIZE + 1
    assert metrics["cola_requests_waiting"] == 0 and metrics["cola_rows_running"] == 0
    assert metrics["cola_time_to_first_block_seconds_count"] == 3
