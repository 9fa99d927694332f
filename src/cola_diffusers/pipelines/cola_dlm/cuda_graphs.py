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

"""CUDA graphs of the DiT passes of the denoising steps: captured once per shape, replayed at every step."""

import contextlib
import copy
import threading

import torch

from ...models.attention_cola import ColaKVCache
from ...models.transformers.transformer_cola import ColaModulationTable, ColaTransformer1DModel


class CapturedPass:
    """
    One DiT pass over static input buffers, captured as a CUDA graph (or, with `capture=False`, run eagerly on the
    same buffers). A call copies its inputs into the buffers, the block's and the request's only when they change,
    replays the graph and returns a copy of its output.
    """

    def __init__(self, transformer, latents, timestep, dit_pass, kv_cache, modulation, *, capture, pool):
        self.transformer = transformer
        self.kv_cache = kv_cache
        self.latents, self.timestep, self.dit_pass = latents.clone(), timestep.clone(), dit_pass.clone()
        self.modulation = copy.copy(modulation)
        self.modulation.values, self.modulation.terms = modulation.values.clone(), modulation.terms.clone()
        self.inputs_of = (dit_pass, modulation)
        self.graph = None
        if capture:
            # Warm-up passes on a side stream (they compute this very step), then the capture.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self.output = self.run()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            # Thread-local: work another thread queues meanwhile does not invalidate the capture.
            with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
                self.output = self.run()

    def run(self) -> torch.Tensor:
        return self.dit_pass.run(self.transformer, self.latents, self.timestep, self.kv_cache, self.modulation)

    def __call__(self, latents, timestep, dit_pass, modulation) -> torch.Tensor:
        self.latents.copy_(latents)
        self.timestep.copy_(timestep)
        if self.inputs_of[0] is not dit_pass:
            self.dit_pass.copy_(dit_pass)
        if self.inputs_of[1] is not modulation:
            self.modulation.values.copy_(modulation.values)
            self.modulation.terms.copy_(modulation.terms)
        self.inputs_of = (dit_pass, modulation)
        if self.graph is None:
            return self.run()
        self.graph.replay()
        return self.output.clone()


class ColaDiTGraphs:
    """
    The CUDA graphs of a pipeline's DiT step passes, made by [`~ColaDLMPipeline.enable_cuda_graphs`]: one per
    shape of a pass (batch size, positions, cache length, the shape and number of its timesteps), captured the first
    time a request runs it and replayed by every later step and request of that shape. A request's DiT key/value
    cache is the graphs' cache of its batch size and length bucket, so requests of one pipeline take turns (`lock`).
    The prefill and the passes that write a finished block run eagerly. Graphs and caches are kept until the
    pipeline or `disable_cuda_graphs` frees them: one cache per batch size and length bucket a service sees.

    Args:
        transformer ([`ColaTransformer1DModel`]): The DiT, on a CUDA device.
        capture (`bool`, defaults to `True`): Capture CUDA graphs; False runs the same static buffers eagerly.
    """

    def __init__(self, transformer: ColaTransformer1DModel, capture: bool = True):
        self.transformer = transformer
        self.capture = capture
        self.passes: dict[tuple, CapturedPass] = {}
        self.caches: dict[tuple[int, int], ColaKVCache] = {}
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.lock = threading.Lock()

    def kv_cache(self, batch_size: int, max_length: int) -> ColaKVCache:
        """
        The DiT cache of requests of `batch_size` rows and at most `max_length` slots, shared by their graphs: its
        length is rounded up to a power of two (at least 64), so that requests of similar lengths share caches and
        graphs (the slots past a request's are masked).
        """
        key = (batch_size, max(64, 1 << (max_length - 1).bit_length()))
        if key not in self.caches:
            self.caches[key] = self.transformer.make_kv_cache(*key)
        return self.caches[key]

    def __call__(self, latents, timestep, dit_pass, kv_cache: ColaKVCache, modulation: ColaModulationTable):
        """The DiT's output for a step pass, from the graph of its shape (captured now if it is new)."""
        key = (
            tuple(latents.shape),
            tuple(timestep.shape),
            tuple(dit_pass.attention_mask.shape),
            tuple(modulation.values.shape),
            id(kv_cache),
        )
        captured = self.passes.get(key)
        if captured is None:
            captured = CapturedPass(
                self.transformer,
                latents,
                timestep,
                dit_pass,
                kv_cache,
                modulation,
                capture=self.capture,
                pool=self.pool,
            )
            self.passes[key] = captured
        return captured(latents, timestep, dit_pass, modulation)


class CudaGraphsMixin:
    """`enable_cuda_graphs` / `disable_cuda_graphs` of [`ColaDLMPipeline`]."""

    _dit_graphs: ColaDiTGraphs | None = None

    def enable_cuda_graphs(self):
        """
        Replays the DiT passes of the denoising steps from CUDA graphs, captured per shape (see [`ColaDiTGraphs`])
        the first time a request runs them and kept with the pipeline; the greedy tokens are those of the eager
        passes. Call it after moving the pipeline to its CUDA device and dtype and after loading adapters or setting
        an attention backend (the graphs keep the weights and kernels they captured; call it again after changing
        them); calls of one pipeline then take turns. See docs/performance.md.
        """
        if self.transformer.device.type != "cuda":
            raise ValueError(
                f"`enable_cuda_graphs` needs the transformer on a CUDA device, it is on {self.transformer.device}: "
                "call `pipe.to('cuda')` first."
            )
        self._dit_graphs = ColaDiTGraphs(self.transformer)

    def disable_cuda_graphs(self):
        """Frees the CUDA graphs and their caches; the DiT runs eagerly again."""
        self._dit_graphs = None

    def cuda_graphs_turn(self):
        """A context in which one call uses the graphs' caches, or nothing to wait for without graphs."""
        return contextlib.nullcontext() if self._dit_graphs is None else self._dit_graphs.lock
