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
A bounded request queue and one background worker that runs a continuous batch: between two blocks, finished
prompts leave it and waiting requests join it, whatever their lengths, guidance scales, sampling settings, stops and
seeds; only requests of another step loop (steps, block length, schedule) wait for the batch to drain.
"""

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from ..generation.request import GenerationRequest
from ..pipelines.cola_dlm.batching import BatchRow, RunningBatch, step_loop
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from ..pipelines.cola_dlm.pipeline_output import ColaDLMStreamChunk
from ..pipelines.cola_dlm.streaming import TextDeltas
from .metrics import ServerMetrics


@dataclass
class Choice:
    """The outcome of one prompt: its text, why it ended and how many tokens it produced."""

    text: str
    finish_reason: str
    completion_tokens: int


@dataclass(eq=False)
class GenerationJob:
    """
    One request: its [`GenerationRequest`] (a row per choice) and one seed per row; `chat` for chat completions. A
    streamed job receives a [`ColaDLMStreamChunk`] per block, then its list of [`Choice`]s (or an exception) on
    `chunks`; any other job gets its choices through `result`. `choices` holds every row's choice once it ends.
    """

    request: GenerationRequest
    seeds: list[int]
    chat: bool = False
    stream: bool = False
    result: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    choices: list[Choice | None] = field(default_factory=list)
    next_row: int = 0
    rows_running: int = 0
    arrival: float = field(default_factory=time.monotonic)
    started: bool = False
    closed: bool = False

    def __post_init__(self):
        self.choices = [None] * self.request.batch_size
        self.deltas = TextDeltas(self.request.batch_size)

    @property
    def rows_left(self) -> int:
        """Rows that have not joined the batch yet."""
        return self.request.batch_size - self.next_row

    @property
    def done(self) -> bool:
        return all(choice is not None for choice in self.choices)

    def take_rows(self, limit: int) -> list[tuple["GenerationJob", int]]:
        """The next `limit` rows at most, to join the batch."""
        start, self.next_row = self.next_row, min(self.next_row + limit, self.request.batch_size)
        return [(self, row) for row in range(start, self.next_row)]


class GenerationEngine:
    """
    Runs [`GenerationJob`]s on one pipeline in a worker thread, as one running batch of at most `max_batch_size`
    rows of at most `max_model_len` tokens (see [`RunningBatch`]). Between two blocks, the rows of the oldest jobs
    fill the free rows; a job of another step loop than the batch's waits (and the jobs behind it) until the batch
    has drained. Every row has its own generator, so its result depends neither on its batch nor on when it joined.
    At most `max_queue` jobs are waiting or running; `submit` raises `asyncio.QueueFull` beyond that.
    """

    def __init__(
        self, pipe: ColaDLMPipeline, max_queue: int = 64, max_batch_size: int = 16, max_model_len: int | None = None
    ):
        self.pipe = pipe
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self.max_model_len = pipe.max_sequence_length if max_model_len is None else max_model_len
        self.pending: deque[GenerationJob] = deque()
        self.num_jobs = 0
        self.wakeup = asyncio.Event()
        self.batch: RunningBatch | None = None
        self.metrics = ServerMetrics()
        self.metrics.waiting.set_function(lambda: len(self.pending))
        self.metrics.running_rows.set_function(lambda: self.running_rows)

    @property
    def running_rows(self) -> int:
        return 0 if self.batch is None else len(self.batch.rows)

    def submit(self, job: GenerationJob):
        if self.num_jobs >= self.max_queue:
            self.metrics.rejected.inc()
            raise asyncio.QueueFull
        self.metrics.requests.inc()
        self.metrics.prompt_tokens.inc(sum(len(ids) for ids in job.request.prompt_token_ids))
        self.num_jobs += 1
        self.pending.append(job)
        self.wakeup.set()

    def cancel(self, job: GenerationJob):
        """Drops a job: a waiting one at once, a running one's rows at the next block boundary."""
        job.cancelled.set()
        if job in self.pending:
            self.pending.remove(job)
        if not job.rows_running:
            self._close(job)

    def _close(self, job: GenerationJob):
        if not job.closed:
            job.closed = True
            self.num_jobs -= 1

    def plan(self) -> RunningBatch:
        """The running batch of the checkpoint's step loop (its default steps and block length), caches allocated."""
        settings = self.pipe.make_request(prompt_token_ids=[[0]], gen_length=1, max_sequence_length=self.max_model_len)
        return RunningBatch(self.pipe, settings, self.max_batch_size, self.max_model_len)

    async def run(self):
        """The worker loop, with caches planned at its start; runs until cancelled."""
        self.batch = await asyncio.to_thread(self.plan)
        while True:
            self._drop_cancelled()
            joining = self._joining_rows()
            if not joining and not self.running_rows:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            try:
                ran, finished = await asyncio.to_thread(self._run_block, joining)
            except Exception as error:
                self._fail(joining, error)
                continue
            self._deliver(ran, finished)

    def _joining_rows(self) -> list[tuple[GenerationJob, int]]:
        """
        The rows that join the batch at this boundary: those of the oldest waiting jobs of the batch's step loop,
        as many as there are free rows; a streamed job joins with all its rows at once. A job whose rows do not all
        fit waits for the rest behind the jobs that came meanwhile.
        """
        free = self.max_batch_size - self.running_rows
        loop = step_loop(self.batch.settings, self.pipe.guider) if self.running_rows else None
        joining = []
        while self.pending and len(joining) < free:
            job = self.pending[0]
            job_loop = step_loop(job.request, self.pipe.guider)
            loop = job_loop if loop is None else loop
            if job_loop != loop or (job.stream and job.rows_left > free - len(joining)):
                break
            rows = job.take_rows(free - len(joining))
            job.rows_running += len(rows)
            joining += rows
            self.pending.popleft()
            if job.rows_left:
                # Its other rows wait behind the jobs that came meanwhile.
                self.pending.append(job)
        return joining

    def _drop_cancelled(self):
        """Drops the rows of cancelled jobs from the batch; a cancelled job without rows in it is done."""
        if self.batch is None:
            return
        dropped = [row for row in self.batch.rows if row.owner[0].cancelled.is_set()]
        self.batch.remove(dropped)
        for row in dropped:
            job = row.owner[0]
            job.rows_running -= 1
            if not job.rows_running:
                self._close(job)

    def _run_block(self, joining: list[tuple[GenerationJob, int]]) -> tuple[list[BatchRow], list[BatchRow]]:
        """Drops the rows of cancelled jobs, adds the joining rows, runs a block; returns the rows run and finished."""
        if joining:
            first = joining[0][0].request
            if self.batch is None or not (self.batch.rows or self.batch.accepts(first)):
                self.batch = RunningBatch(self.pipe, first, self.max_batch_size, self.max_model_len)
            requests = [job.request.with_prompts([job.request.prompt_token_ids[row]]) for job, row in joining]
            generators = [torch.Generator().manual_seed(job.seeds[row]) for job, row in joining]
            self.batch.add(requests, generators, joining)
        ran = list(self.batch.rows)
        return ran, self.batch.run_block() if ran else []

    def _fail(self, joining: list[tuple[GenerationJob, int]], error: Exception):
        """Answers every job of the batch with `error`; the batch starts afresh."""
        jobs = {job: None for job, _ in joining}
        if self.batch is not None:
            jobs.update({row.owner[0]: None for row in self.batch.rows})
        self.batch = None
        for job in jobs:
            if job in self.pending:
                self.pending.remove(job)
            job.rows_running = 0
            if job.stream:
                job.chunks.put_nowait(error)
            elif not job.result.done():
                job.result.set_exception(error)
            self._close(job)

    def _deliver(self, ran: list[BatchRow], finished: list[BatchRow]):
        """Records the choices of finished rows, streams every streamed job's new text, answers finished jobs."""
        self.metrics.batch_rows.observe(len(ran))
        for row in finished:
            job, index = row.owner
            job.rows_running -= 1
            job.choices[index] = Choice(row.completion.text, row.finish_reason, len(row.completion.token_ids))
            self.metrics.finished.labels(row.finish_reason).inc()
            self.metrics.completion_tokens.inc(len(row.completion.token_ids))
        jobs: dict[GenerationJob, list[BatchRow]] = {}
        for row in ran:
            jobs.setdefault(row.owner[0], []).append(row)
        for job, rows in jobs.items():
            if not job.started:
                job.started = True
                self.metrics.time_to_first_block.observe(time.monotonic() - job.arrival)
            if job.cancelled.is_set():
                if not job.rows_running:
                    self._close(job)
                continue
            if job.stream:
                job.chunks.put_nowait(stream_chunk(job, rows))
            if job.done:
                if job.stream:
                    job.chunks.put_nowait(job.choices)
                else:
                    job.result.set_result(job.choices)
                self._close(job)


def stream_chunk(job: GenerationJob, rows: list[BatchRow]) -> ColaDLMStreamChunk:
    """The chunk of a streamed job's block: the tokens and new text of its rows that ran it."""
    size = job.request.batch_size
    texts, token_ids, finished = [""] * size, [[] for _ in range(size)], [True] * size
    for row in rows:
        _, index = row.owner
        texts[index] = job.deltas.delta(index, row.completion, row.finished)
        token_ids[index] = row.block_tokens(row.block_index - 1).tolist()
        finished[index] = row.completion.stopped
    return ColaDLMStreamChunk(
        block_index=rows[0].block_index - 1,
        step_index=None,
        token_ids=token_ids,
        texts=texts,
        finished=finished,
        is_preview=False,
    )
