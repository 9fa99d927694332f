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

"""The server's Prometheus metrics, in a registry of their own per app."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SECOND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60)


class ServerMetrics:
    """
    What `/metrics` reports: requests received, refused and finished, the queue and the running batch, rows per
    block, time to a request's first block, and tokens (their rate is the throughput). Names follow vLLM's, with
    the prefix `cola_`.
    """

    def __init__(self):
        self.registry = CollectorRegistry()
        options = {"registry": self.registry}
        self.requests = Counter("cola_requests", "Generation requests accepted into the queue.", **options)
        self.rejected = Counter(
            "cola_requests_rejected", "Requests answered 503 because the queue was full.", **options
        )
        self.finished = Counter(
            "cola_requests_finished", "Completions (rows) ended, by finish reason.", ["finish_reason"], **options
        )
        self.waiting = Gauge("cola_requests_waiting", "Requests waiting for rows in the batch.", **options)
        self.running_rows = Gauge("cola_rows_running", "Rows (prompts times n) in the running batch.", **options)
        self.batch_rows = Histogram(
            "cola_batch_rows", "Rows in the batch, per generated block.", buckets=ROW_BUCKETS, **options
        )
        self.time_to_first_block = Histogram(
            "cola_time_to_first_block_seconds",
            "Seconds from a request's arrival to its first decoded block.",
            buckets=SECOND_BUCKETS,
            **options,
        )
        self.prompt_tokens = Counter("cola_prompt_tokens", "Prompt tokens of accepted requests.", **options)
        self.completion_tokens = Counter("cola_completion_tokens", "Tokens of finished completions.", **options)
