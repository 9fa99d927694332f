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

"""The guided teacher's couplings of the distillation stage: each prompt's noise and the latents it becomes."""

import json
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..pipelines.cola_dlm.layout import ColaDLMLayout
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .config import TrainingConfig


@torch.no_grad()
def teacher_couplings(
    pipe: ColaDLMPipeline,
    prompts: list[str],
    *,
    gen_length: int,
    num_inference_steps: int,
    guidance_scale: float,
    max_prompt_tokens: int,
    generator: torch.Generator,
) -> list[dict[str, torch.Tensor]]:
    """
    Generates `gen_length` tokens' worth of blocks for every prompt with the teacher, from noise drawn by `generator`.

    Returns:
        One record per prompt: `latents` (the prompt's prefix latents, then the teacher's blocks with the repainted
        prompt latents), `noise` (zeros on the prefix, then the blocks' starting noise) and `generated` (the
        positions the teacher generated), all from position 0 of the prompt's sequence.
    """
    device = pipe._execution_device
    request = pipe.make_request(
        prompt=prompts,
        gen_length=gen_length,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        eos_early_stop=False,
        max_sequence_length=max_prompt_tokens + gen_length,
    )
    # Tokenized and encoded once: the pipeline takes the request and its prompt latents.
    prompt_latents, prompt_lengths = pipe.encode_prompt(request, device)
    block_length = request.block_length
    layout = ColaDLMLayout.from_prompts(prompt_latents, prompt_lengths, gen_length, block_length, pipe.vae.config)
    shape = (len(prompts), layout.num_blocks * block_length, pipe.transformer.config.in_channels)
    noise = torch.randn(shape, generator=generator)
    output = pipe(request=request, prompt_latents=prompt_latents, latents=noise.to(device), output_type="latent")
    blocks = output.latents.cpu()

    # The first block's result already holds the repainted prompt latents: the sampler keeps them at every step.
    repainted = layout.repainted.cpu()
    records = []
    for row, prefix_length in enumerate(layout.prefix_lengths.tolist()):
        prefix = prompt_latents[row, :prefix_length].cpu()
        generated = torch.ones(shape[1], dtype=torch.bool)
        generated[:block_length] = ~repainted[row]
        records.append(
            {
                "latents": torch.cat([prefix, blocks[row]]),
                "noise": torch.cat([torch.zeros_like(prefix), noise[row]]),
                "generated": torch.cat([torch.zeros(prefix_length, dtype=torch.bool), generated]),
            }
        )
    return records


def collate_couplings(records: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pads records of different lengths into a batch; `valid` is False on the padding."""
    length = max(len(record["latents"]) for record in records)
    batch = {
        "latents": torch.zeros(len(records), length, records[0]["latents"].shape[-1]),
        "noise": torch.zeros(len(records), length, records[0]["noise"].shape[-1]),
        "generated": torch.zeros(len(records), length, dtype=torch.bool),
        "valid": torch.zeros(len(records), length, dtype=torch.bool),
    }
    for row, record in enumerate(records):
        size = len(record["latents"])
        for name in ("latents", "noise", "generated"):
            batch[name][row, :size] = record[name]
        batch["valid"][row, :size] = True
    return batch


def coupling_settings(config: TrainingConfig, num_prompts: int) -> dict:
    """What the couplings on disk were generated with; a run with other settings must not reuse them."""
    return {
        "teacher": config.pretrained_model,
        "num_prompts": num_prompts,
        "gen_length": config.gen_length,
        "teacher_num_inference_steps": config.teacher_num_inference_steps,
        "teacher_guidance_scale": config.teacher_guidance_scale,
        "teacher_batch_size": config.teacher_batch_size,
        "max_length": config.max_length,
        "seed": config.seed,
    }


def load_couplings(accelerator: Accelerator, pipe: ColaDLMPipeline, config: TrainingConfig, prompts: list[str]):
    """
    The teacher's couplings of `prompts`, generated in shards of `teacher_batch_size` prompts under
    `output_dir/couplings`, each process generating every `num_processes`-th shard. A shard is written to a temporary
    file and renamed, so that a stopped run resumes at the first missing shard and never reads a partial one.
    """
    folder = os.path.join(config.output_dir, "couplings")
    settings = coupling_settings(config, len(prompts))
    settings_file = os.path.join(folder, "settings.json")
    if accelerator.is_main_process and not os.path.exists(settings_file):
        os.makedirs(folder, exist_ok=True)
        save_atomically(settings_file, lambda path: Path(path).write_text(json.dumps(settings)))
    accelerator.wait_for_everyone()
    with open(settings_file) as file:
        saved = json.load(file)
    if saved != settings:
        raise ValueError(
            f"`{folder}` holds couplings generated with other settings ({saved}); delete it or choose another "
            f"`output_dir` to distil with {settings}."
        )

    size = config.teacher_batch_size
    num_shards = -(-len(prompts) // size)
    paths = [os.path.join(folder, f"shard-{index:05d}.pt") for index in range(num_shards)]
    mine = range(accelerator.process_index, num_shards, accelerator.num_processes)
    missing = [index for index in mine if not os.path.exists(paths[index])]
    pipe.set_progress_bar_config(disable=True)
    progress_bar = tqdm(missing, desc="Teacher couplings", disable=not accelerator.is_local_main_process)
    for index in progress_bar:
        records = teacher_couplings(
            pipe,
            prompts[index * size : (index + 1) * size],
            gen_length=config.gen_length,
            num_inference_steps=config.teacher_num_inference_steps,
            guidance_scale=config.teacher_guidance_scale,
            max_prompt_tokens=config.max_length,
            generator=torch.Generator().manual_seed(config.seed * num_shards + index),
        )
        save_atomically(paths[index], lambda path: torch.save(records, path))
    accelerator.wait_for_everyone()
    return [record for path in paths for record in torch.load(path, weights_only=True)]


def save_atomically(path: str, save):
    """Calls `save` on a temporary name beside `path`, then renames it: `path` is either whole or absent."""
    save(path + ".tmp")
    os.replace(path + ".tmp", path)
