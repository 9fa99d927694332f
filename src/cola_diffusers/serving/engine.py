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

"""A bounded request queue and one background worker that runs the pipeline, batching compatible requests."""

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from ..pipelines.cola_dlm.pipeline_output import ColaDLMPipelineOutput, ColaDLMStreamChunk
from ..pipelines.cola_dlm.streaming import ColaDLMStreamer


@dataclass(frozen=True)
class GenerationSettings:
    """The pipeline settings a request shares with every request it is batched with."""

    max_tokens: int
    num_inference_steps: int
    guidance_scale: float
    block_length: int | None
    temperature: float
    top_k: int | None
    top_p: float | None
    stop: tuple[str, ...] | None
    chat_format: str | None
    max_sequence_length: int

    def pipeline_kwargs(self) -> dict:
        chat = {} if self.chat_format is None else {"chat_format": self.chat_format}
        return {
            **chat,
            "gen_length": self.max_tokens,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "block_length": self.block_length,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "stop": list(self.stop) if self.stop else None,
            "max_sequence_length": self.max_sequence_length,
        }


@dataclass
class Choice:
    """The outcome of one prompt: its text, why it ended and how many tokens it produced."""

    text: str
    finish_reason: str
    completion_tokens: int


@dataclass
class GenerationJob:
    """
    One request: prompt strings (or conversations, when `chat`), one seed each. A streamed job receives
    [`ColaDLMStreamChunk`]s, then its list of [`Choice`]s (or an exception) on `chunks`; any other job gets its
    choices through `result`.
    """

    inputs: list
    seeds: list[int]
    settings: GenerationSettings
    chat: bool = False
    stream: bool = False
    result: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def batch_key(self) -> tuple | None:
        """Jobs with the same key run in one pipeline call; streamed jobs run alone."""
        return None if self.stream else (self.chat, self.settings)


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
        key, size = batch[0].batch_key, len(batch[0].inputs)
        if key is None:
            return batch
        for job in list(self.pending):
            if job.batch_key == key and size + len(job.inputs) <= self.max_batch_size:
                self.pending.remove(job)
                batch.append(job)
                size += len(job.inputs)
        return batch

    def _pipeline_kwargs(self, jobs: list[GenerationJob]) -> dict:
        inputs = [item for job in jobs for item in job.inputs]
        generators = [torch.Generator().manual_seed(seed) for job in jobs for seed in job.seeds]
        kwargs = {"messages": inputs} if jobs[0].chat else {"prompt": inputs}
        return {**kwargs, **jobs[0].settings.pipeline_kwargs(), "generator": generators}

    def _choices(self, output: ColaDLMPipelineOutput, settings: GenerationSettings) -> list[Choice]:
        choices = []
        stop_token_ids, stop = self.pipe.stop_criteria(settings.stop, chat_format=settings.chat_format)
        for sequence in output.sequences.tolist():
            kept = self.pipe.truncate(sequence, stop_token_ids, stop)
            choices.append(Choice(kept.text, "stop" if kept.stopped else "length", len(kept.token_ids)))
        return choices

    def _generate(self, jobs: list[GenerationJob]) -> list[list[Choice]]:
        def stop_when_abandoned(pipe, step, timestep, callback_kwargs):
            if all(job.cancelled.is_set() for job in jobs):
                pipe._interrupt = True
            return callback_kwargs

        output = self.pipe(**self._pipeline_kwargs(jobs), callback_on_step_end=stop_when_abandoned)
        choices = self._choices(output, jobs[0].settings)
        results = []
        for job in jobs:
            results.append(choices[: len(job.inputs)])
            choices = choices[len(job.inputs) :]
        return results

    def _stream(self, job: GenerationJob, loop: asyncio.AbstractEventLoop):
        def emit(item: ColaDLMStreamChunk | list[Choice] | Exception):
            loop.call_soon_threadsafe(job.chunks.put_nowait, item)

        try:
            output = self.pipe(**self._pipeline_kwargs([job]), streamer=JobStreamer(self.pipe, job, emit))
            if not job.cancelled.is_set():
                emit(self._choices(output, job.settings))
        except Exception as error:
            emit(error)


class JobStreamer(ColaDLMStreamer):
    """Sends the block chunks of a streamed job to its queue; a cancelled job interrupts the pipeline."""

    def __init__(self, pipe: ColaDLMPipeline, job: GenerationJob, emit):
        self.pipe, self.job, self.emit = pipe, job, emit

    def put(self, chunk: ColaDLMStreamChunk):
        if self.job.cancelled.is_set():
            self.pipe._interrupt = True
        elif not chunk.is_preview:
            self.emit(chunk)
