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

"""A bounded request queue and one background worker that runs the pipeline, batching requests of equal settings."""

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
    other job gets its choices through `result`.
    """

    request: GenerationRequest
    seeds: list[int]
    chat: bool = False
    stream: bool = False
    result: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def batch_key(self) -> tuple | None:
        """Jobs with the same key run in one pipeline call; streamed jobs run alone."""
        return None if self.stream else self.request.settings


class GenerationEngine:
    """
    Runs [`GenerationJob`]s on one pipeline, one pipeline call at a time in a worker thread. Jobs waiting with the
    same settings are batched (up to `max_batch_size` prompts) with one generator per prompt, so a prompt's result
    does not depend on its batch. At most `max_queue` jobs are waiting or running; `submit` raises
    `asyncio.QueueFull` beyond that.
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
        """Drops a waiting job; a running job stops after its current block once every job of its call is cancelled."""
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
            try:
                if batch[0].stream:
                    await asyncio.to_thread(self._stream, batch[0], loop)
                    continue
                try:
                    results = await asyncio.to_thread(self._generate, batch)
                except Exception as error:
                    for job in batch:
                        if not job.result.done():
                            job.result.set_exception(error)
                    continue
                for job, choices in zip(batch, results):
                    if not job.result.done():
                        job.result.set_result(choices)
            finally:
                self.num_jobs -= len(batch)

    def _next_batch(self) -> list[GenerationJob]:
        """The oldest job and the waiting jobs that can share its pipeline call."""
        batch = [self.pending.popleft()]
        key, size = batch[0].batch_key, batch[0].request.batch_size
        if key is None:
            return batch
        for job in list(self.pending):
            if job.batch_key == key and size + job.request.batch_size <= self.max_batch_size:
                self.pending.remove(job)
                batch.append(job)
                size += job.request.batch_size
        return batch

    def _pipeline_kwargs(self, jobs: list[GenerationJob]) -> dict:
        """One pipeline call for `jobs`, whose requests differ only in their prompts."""
        prompt_token_ids = [ids for job in jobs for ids in job.request.prompt_token_ids]
        generators = [torch.Generator().manual_seed(seed) for job in jobs for seed in job.seeds]
        return {"request": jobs[0].request.with_prompts(prompt_token_ids), "generator": generators}

    def _generate(self, jobs: list[GenerationJob]) -> list[list[Choice]]:
        def stop_when_abandoned(pipe, step, timestep, callback_kwargs):
            if all(job.cancelled.is_set() for job in jobs):
                pipe._interrupt = True
            return callback_kwargs

        choices = choices_of(self.pipe(**self._pipeline_kwargs(jobs), callback_on_step_end=stop_when_abandoned))
        results = []
        for job in jobs:
            results.append(choices[: job.request.batch_size])
            choices = choices[job.request.batch_size :]
        return results

    def _stream(self, job: GenerationJob, loop: asyncio.AbstractEventLoop):
        def emit(item: ColaDLMStreamChunk | list[Choice] | Exception):
            loop.call_soon_threadsafe(job.chunks.put_nowait, item)

        try:
            output = self.pipe(**self._pipeline_kwargs([job]), streamer=JobStreamer(self.pipe, job, emit))
            if not job.cancelled.is_set():
                emit(choices_of(output))
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
