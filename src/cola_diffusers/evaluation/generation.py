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
Generation for a benchmark: batched by prompt length, resumable, data-parallel under `accelerate launch`.

Every record's starting noise comes from its own generators, seeded as the official driver seeds them with
`COLA_INFER_PER_SAMPLE_NOISE_SEED`: block `b` of record `id` under seed `s` starts from
`randn(block_length, latent_dim)` of a generator seeded `s + id * 1000 + b * 10_000_000` (a string id counts as its
CRC-32). A record's result therefore depends on its seed and id only, not on its batch, its process or the other
records.
"""

import json
import os
import zlib

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .data import model_input, read_jsonl
from .settings import EvalSettings


def record_seed(record_id) -> int:
    """A record id as the official driver turns it into a seed offset: the integer, or the CRC-32 of the text."""
    try:
        return int(record_id)
    except (TypeError, ValueError):
        return zlib.crc32(str(record_id).encode("utf-8")) & 0xFFFFFFFF


def record_noise(pipe: ColaDLMPipeline, record_id, seed: int, num_blocks: int, device: torch.device) -> torch.Tensor:
    """The starting noise of `num_blocks` blocks of one record, `(num_blocks * block_length, latent_dim)`."""
    block_length, latent_dim = pipe.transformer.config.block_size, pipe.transformer.config.in_channels
    blocks = []
    for block_index in range(num_blocks):
        generator = torch.Generator(device).manual_seed(
            seed + record_seed(record_id) * 1_000 + block_index * 10_000_000
        )
        blocks.append(torch.randn(block_length, latent_dim, generator=generator, device=device))
    return torch.cat(blocks)


def generate_batch(
    pipe: ColaDLMPipeline, records: list[dict], token_ids: list[list[int]], seed: int, settings: EvalSettings
) -> list[str]:
    """The generated text of every record of a batch (its prompts' `token_ids`), each from its own noise."""
    request = pipe.make_request(
        prompt_token_ids=token_ids,
        gen_length=settings.gen_length,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        temperature=settings.temperature,
    )
    num_blocks = pipe.num_blocks(request)
    device = pipe._execution_device
    noise = torch.stack([record_noise(pipe, record["id"], seed, num_blocks, device) for record in records])
    generators = [torch.Generator(device).manual_seed(seed + record_seed(record["id"])) for record in records]
    return pipe(request=request, latents=noise, generator=generators).texts


class TaskRun:
    """
    One task of a run in `output_dir`: the records still to generate, each process's appended results
    (`<task>.part<rank>.jsonl`, flushed after every batch) and, once complete, `<task>.jsonl` in record order.
    """

    def __init__(self, output_dir: str, task: str, records: list[dict], seeds: tuple[int, ...]):
        self.output_dir, self.task, self.records, self.seeds = output_dir, task, records, seeds
        self.path = os.path.join(output_dir, f"{task}.jsonl")
        os.makedirs(output_dir, exist_ok=True)

    def part_path(self, rank: int) -> str:
        return os.path.join(self.output_dir, f"{self.task}.part{rank}.jsonl")

    def part_paths(self) -> list[str]:
        prefix = f"{self.task}.part"
        names = sorted(name for name in os.listdir(self.output_dir) if name.startswith(prefix))
        return [os.path.join(self.output_dir, name) for name in names]

    def results(self) -> list[dict]:
        """Every result written so far, complete or in parts."""
        paths = ([self.path] if os.path.isfile(self.path) else []) + self.part_paths()
        return [result for path in paths for result in read_jsonl(path, allow_cut_last_line=True)]

    def pending(self) -> list[tuple[int, dict]]:
        """`(seed, record)` of every record not yet generated for a seed."""
        done = {(result.get("seed"), result["id"]) for result in self.results()}
        return [(seed, record) for seed in self.seeds for record in self.records if (seed, record["id"]) not in done]

    def append(self, rank: int, results: list[dict]):
        path = self.part_path(rank)
        repair_last_line(path)
        with open(path, "a", encoding="utf-8") as file:
            file.writelines(json.dumps(result, ensure_ascii=False) + "\n" for result in results)
            file.flush()
            os.fsync(file.fileno())

    def finish(self):
        """Writes `<task>.jsonl` in seed and record order (atomically) and removes the parts."""
        by_key = {(result.get("seed"), result["id"]): result for result in self.results()}
        ordered = [by_key[(seed, record["id"])] for seed in self.seeds for record in self.records]
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            file.writelines(json.dumps(result, ensure_ascii=False) + "\n" for result in ordered)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        for path in self.part_paths():
            os.remove(path)


def repair_last_line(path: str):
    """Cuts a last line left unterminated by a killed writer, so that appends start on a line of their own."""
    if not os.path.isfile(path):
        return
    with open(path, "rb+") as file:
        data = file.read()
        if data and not data.endswith(b"\n"):
            file.truncate(data.rfind(b"\n") + 1)


def input_fields(record: dict) -> dict:
    """A record without the fields a run writes (`seed`, `generate`, and `others` from the official scorer)."""
    return {key: value for key, value in record.items() if key not in ("seed", "generate", "others")}


def run_task(
    pipe: ColaDLMPipeline,
    task: str,
    records: list[dict],
    settings: EvalSettings,
    output_dir: str,
    batch_size: int = 20,
    *,
    state: PartialState | None = None,
) -> str:
    """
    Generates every record of `task` under every seed of `settings` that `output_dir` does not hold yet, split
    between the processes of `state`, batched by prompt length; returns the path of `<task>.jsonl`.
    """
    state = state or PartialState()
    run = TaskRun(output_dir, task, records, settings.seeds)
    pending = run.pending()
    # Every prompt is tokenized once, here.
    token_ids = pipe.tokenize(prompt=[model_input(record) for _, record in pending]) if pending else []
    # Seed by seed, longest prompts first: a batch's prompts then share most of their prefix slots.
    order = sorted(range(len(pending)), key=lambda index: (pending[index][0], -len(token_ids[index]), index))
    mine = [(*pending[index], token_ids[index]) for index in order[state.process_index :: state.num_processes]]
    progress = tqdm(total=len(pending), desc=task, disable=not state.is_main_process or not pending)
    for start in range(0, len(mine), batch_size):
        batch = mine[start : start + batch_size]
        for seed in sorted({seed for seed, _, _ in batch}):
            of_seed = [(record, ids) for batch_seed, record, ids in batch if batch_seed == seed]
            records_of_seed = [record for record, _ in of_seed]
            texts = generate_batch(pipe, records_of_seed, [ids for _, ids in of_seed], seed, settings)
            results = [
                {**input_fields(record), "seed": seed, "generate": text}
                for record, text in zip(records_of_seed, texts)
            ]
            run.append(state.process_index, results)
        progress.update(min(len(batch) * state.num_processes, progress.total - progress.n))
    progress.close()
    state.wait_for_everyone()
    if state.is_main_process:
        run.finish()
    state.wait_for_everyone()
    return run.path
