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
A bounded request queue and one background worker that runs the pipeline: requests of equal settings share a
pipeline call, and a request of more rows than a call holds runs in turns with the others.
"""

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from ..generation.request import GenerationRequest
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from ..pipelines.cola_dlm.pipeline_output import ColaDLMPipelineOutput, ColaDLMStreamChunk
from ..pipelines.cola_dlm.streaming import ColaDLMStreamer


@dataclass
class Choice:
    """The outcome of one prompt: its text, why it ended and how many tokens it produced."""

    text: str
    finish_reason: str
    completion_tokens: int


@dataclass
class GenerationJob:
    """
    One request: its [`GenerationRequest`] (a row per choice) and one seed per row; `chat` for chat completions. A
    streamed job receives [`ColaDLMStreamChunk`]s, then its list of [`Choice`]s (or an exception) on `chunks`; any
    other job gets its choices through `result`. `choices` holds the rows generated so far, in order.
    """

    request: GenerationRequest
    seeds: list[int]
    chat: bool = False
    stream: bool = False
    result: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    choices: list[Choice] = field(default_factory=list)
    next_row: int = 0

    @property
    def batch_key(self) -> tuple | None:
        """Jobs with the same key run in one pipeline call; streamed jobs run alone."""
        return None if self.stream else self.request.settings

    @property
    def rows_left(self) -> int:
        """Rows not yet handed to a pipeline call."""
        return self.request.batch_size - self.next_row

    def take_rows(self, limit: int) -> "JobRows":
        """The next `limit` rows at most, handed to a pipeline call."""
        start, self.next_row = self.next_row, min(self.next_row + limit, self.request.batch_size)
        return JobRows(self, start, self.next_row)


@dataclass
class JobRows:
    """Rows `[start, stop)` of a job, run in one pipeline call."""

    job: GenerationJob
    start: int
    stop: int

    @property
    def prompt_token_ids(self) -> tuple[tuple[int, ...], ...]:
        return self.job.request.prompt_token_ids[self.start : self.stop]

    @property
    def seeds(self) -> list[int]:
        return self.job.seeds[self.start : self.stop]

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


class GenerationEngine:
    """
    Runs [`GenerationJob`]s on one pipeline, one pipeline call of at most `max_batch_size` rows at a time, in a
    worker thread. A call takes rows of the oldest job and fills up with rows of waiting jobs of the same settings,
    with one generator per row, so a row's result depends neither on its batch nor on how its job is split. A job
    with rows left after its call waits behind the jobs that arrived meanwhile. At most `max_queue` jobs are waiting
    or running; `submit` raises `asyncio.QueueFull` beyond that.
    """

    def __init__(self, pipe: ColaDLMPipeline, max_queue: int = 64, max_batch_size: int = 16):
        self.pipe = pipe
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self.pending: deque[GenerationJob] = deque()
        self.num_jobs = 0
        self.wakeup = asyncio.Event()

    def submit(self, job: GenerationJob):
        if self.num_jobs >= self.max_queue:
            raise asyncio.QueueFull
        self.num_jobs += 1
        self.pending.append(job)
        self.wakeup.set()

    def cancel(self, job: GenerationJob):
        """
        Drops a job: a waiting one at once; a running one runs none of its rows left, and its call stops after the
        current block once every job of the call is cancelled.
        """
        job.cancelled.set()
        if job in self.pending:
            self.pending.remove(job)
            self.num_jobs -= 1

    async def run(self):
        """The worker loop; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            batch = self._next_batch()
            if batch[0].job.stream:
                await asyncio.to_thread(self._stream, batch[0], loop)
            else:
                try:
                    results = await asyncio.to_thread(self._generate, batch)
                except Exception as error:
                    results = [error] * len(batch)
                for rows, choices in zip(batch, results):
                    self._collect(rows.job, choices)
            for rows in batch:
                self._requeue_or_finish(rows.job)

    def _next_batch(self) -> list[JobRows]:
        """
        Rows of the oldest job and of the waiting jobs that can share its pipeline call, `max_batch_size` at most;
        every job with rows in the call leaves the queue until the call ends.
        """
        first = self.pending.popleft()
        if first.batch_key is None:
            return [first.take_rows(first.rows_left)]
        batch = [first.take_rows(self.max_batch_size)]
        size = batch[0].num_rows
        for job in list(self.pending):
            if size == self.max_batch_size:
                break
            if job.batch_key == first.batch_key:
                self.pending.remove(job)
                batch.append(job.take_rows(self.max_batch_size - size))
                size += batch[-1].num_rows
        return batch

    def _collect(self, job: GenerationJob, choices: list[Choice] | Exception):
        """Adds a call's choices to `job`; an exception answers the job at once."""
        if isinstance(choices, Exception):
            job.next_row = job.request.batch_size
            if not job.result.done():
                job.result.set_exception(choices)
            return
        job.choices.extend(choices)

    def _requeue_or_finish(self, job: GenerationJob):
        """After a call: a job with rows left waits again, behind the jobs that came meanwhile; else it is done."""
        if job.rows_left and not job.cancelled.is_set():
            self.pending.append(job)
            return
        self.num_jobs -= 1
        if not job.result.done() and len(job.choices) == job.request.batch_size:
            job.result.set_result(job.choices)

    def _pipeline_kwargs(self, batch: list[JobRows]) -> dict:
        """One pipeline call for the rows of `batch`, whose requests differ only in their prompts."""
        prompt_token_ids = [ids for rows in batch for ids in rows.prompt_token_ids]
        generators = [torch.Generator().manual_seed(seed) for rows in batch for seed in rows.seeds]
        return {"request": batch[0].job.request.with_prompts(prompt_token_ids), "generator": generators}

    def _generate(self, batch: list[JobRows]) -> list[list[Choice]]:
        def stop_when_abandoned(pipe, step, timestep, callback_kwargs):
            if all(rows.job.cancelled.is_set() for rows in batch):
                pipe._interrupt = True
            return callback_kwargs

        choices = choices_of(self.pipe(**self._pipeline_kwargs(batch), callback_on_step_end=stop_when_abandoned))
        results = []
        for rows in batch:
            results.append(choices[: rows.num_rows])
            choices = choices[rows.num_rows :]
        return results

    def _stream(self, rows: JobRows, loop: asyncio.AbstractEventLoop):
        job = rows.job

        def emit(item: ColaDLMStreamChunk | list[Choice] | Exception):
            loop.call_soon_threadsafe(job.chunks.put_nowait, item)

        try:
            output = self.pipe(**self._pipeline_kwargs([rows]), streamer=JobStreamer(self.pipe, job, emit))
            job.choices = choices_of(output)
            if not job.cancelled.is_set():
                emit(job.choices)
        except Exception as error:
            emit(error)


def choices_of(output: ColaDLMPipelineOutput) -> list[Choice]:
    """The choice of every row of a pipeline call: its text, why it ended and how many tokens it kept."""
    return [
        Choice(text, finish_reason, num_tokens)
        for text, finish_reason, num_tokens in zip(output.texts, output.finish_reasons, output.num_tokens)
    ]


class JobStreamer(ColaDLMStreamer):
    """Sends the block chunks of a streamed job to its queue; a cancelled job interrupts the pipeline."""

    def __init__(self, pipe: ColaDLMPipeline, job: GenerationJob, emit):
        self.pipe, self.job, self.emit = pipe, job, emit

    def put(self, chunk: ColaDLMStreamChunk):
        if self.job.cancelled.is_set():
            self.pipe._interrupt = True
        elif not chunk.is_preview:
            self.emit(chunk)
