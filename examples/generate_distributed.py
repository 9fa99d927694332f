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

"""Data-parallel generation: the prompts are split between the processes, each generates its share, and the main
process writes every result in order.

    accelerate launch --num_processes 2 examples/generate_distributed.py --output results.json "prompt one" "prompt two"

On a machine without GPUs, start the processes with torchrun and gloo:
`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...`.

Every prompt gets its own generator seeded with `seed + index`, so a prompt's text does not depend on how many
processes there are or which other prompts share its batch.
"""

import argparse
import json

import torch
from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env

from cola_diffusers import ColaDLMPipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--model", required=True, help="Checkpoint folder or Hub repo id.")
    parser.add_argument("--output", required=True, help="JSON file for the results, written by the main process.")
    parser.add_argument("--gen-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    pipe = ColaDLMPipeline.from_pretrained(args.model).to(state.device)
    pipe.set_progress_bar_config(disable=not state.is_main_process)

    indexed_prompts = list(enumerate(args.prompts))
    results = []
    with state.split_between_processes(indexed_prompts) as shard:
        if shard:
            indices, prompts = zip(*shard)
            generators = [torch.Generator().manual_seed(args.seed + index) for index in indices]
            output = pipe(
                list(prompts),
                gen_length=args.gen_length,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                generator=generators,
            )
            results = [
                {"index": index, "process": state.process_index, "prompt": prompt, "text": text, "token_ids": ids}
                for index, prompt, text, ids in zip(indices, prompts, output.texts, output.sequences.tolist())
            ]

    results = gather_object(results)
    if state.is_main_process:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(sorted(results, key=lambda result: result["index"]), file, indent=2)
    # Leave the process group together: a gloo process that exits while its peer still talks to it can abort.
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main()
