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

"""Requests of many rows on a real server: capped per request, split into calls that take turns with the others."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cola_diffusers.serving import create_app

from .test_server import MODEL, demo_pipeline, serve


MAX_BATCH_SIZE = 4


class RecordedCalls:
    """Wraps the engine's pipeline calls: for each call, the row count of each request and its rows in the call."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.generate = engine._generate
        engine._generate = self.record

    def record(self, batch):
        self.calls.append([(rows.job.request.batch_size, rows.num_rows) for rows in batch])
        return self.generate(batch)

    def rows(self) -> list[int]:
        return [sum(num_rows for _, num_rows in call) for call in self.calls]


@pytest.fixture(scope="module")
def split_app():
    return create_app(demo_pipeline(), MODEL, max_batch_size=MAX_BATCH_SIZE, max_rows_per_request=512)


@pytest.fixture(scope="module")
def split_url(split_app):
    with serve(split_app) as url:
        yield url


@pytest.fixture
def calls(split_app):
    recorded = RecordedCalls(split_app.state.engine)
    yield recorded
    del split_app.state.engine._generate


def test_a_request_of_more_rows_than_allowed_is_refused_before_any_model_work(split_url, calls):
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
    assert calls.calls == []


def test_a_large_request_runs_in_calls_of_max_batch_size_rows_that_take_turns(split_url, calls):
    sampled = {"model": MODEL, "prompt": ["1234>", "567>", "89>"], "n": 3, "seed": 4, "temperature": 1.0}
    large = {**sampled, "prompt": sampled["prompt"] * 8, "max_tokens": 8}
    small = {"model": MODEL, "prompt": "4321>", "max_tokens": 4, "seed": 0}
    with httpx.Client(base_url=split_url, timeout=60) as client, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/v1/completions", json=large)
        while not calls.calls:
            time.sleep(0.01)
        started = time.monotonic()
        answered = client.post("/v1/completions", json=small)
        small_seconds = time.monotonic() - started
        assert answered.status_code == 200 and answered.json()["choices"][0]["text"] == "1234"
        assert not pending.done(), "the large request ended before the small one was answered"
        split = pending.result()
    # 72 rows: calls of at most 4 rows, and the small request ran in one of the first calls after it came.
    assert split.status_code == 200 and len(split.json()["choices"]) == 72
    assert max(calls.rows()) == MAX_BATCH_SIZE and sum(calls.rows()) == 72 + 1
    small_call = next(index for index, call in enumerate(calls.calls) if (1, 1) in call)
    assert small_call <= 2 and small_seconds < 5
    # Each row's text is the one it gets in one call of a server that batches 16 rows.
    with serve(create_app(demo_pipeline(), MODEL)) as url:
        whole = httpx.post(f"{url}/v1/completions", json={**large, "prompt": large["prompt"][:3]}, timeout=60)
    texts = [choice["text"] for choice in split.json()["choices"]]
    assert texts[:9] == [choice["text"] for choice in whole.json()["choices"]]


def test_a_client_that_hangs_up_stops_the_rest_of_its_rows(split_url, calls):
    large = {"model": MODEL, "prompt": ["1234>"] * 128, "n": 4, "max_tokens": 8}
    with httpx.Client(base_url=split_url, timeout=60) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/completions", json=large, timeout=1.0)
        deadline = time.monotonic() + 10
        while client.get("/health").json()["queued"]:
            assert time.monotonic() < deadline, "the abandoned request kept its slot"
            time.sleep(0.05)
        ran = len(calls.calls)
        time.sleep(0.3)
        assert len(calls.calls) == ran < 128 * 4 // MAX_BATCH_SIZE
