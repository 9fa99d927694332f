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
Accuracy and speed against steps per block, for every scheduler, and against guidance, on the embedded demo model.

    python benchmarks/sweep_demo.py --output benchmarks/sweep_demo
    python benchmarks/sweep_demo.py --model src/cola_diffusers/demo/reverse_digits_fast --guidance 1 --steps 1 \
        --output benchmarks/sweep_demo_fast                   # the distilled student

Every configuration answers the 500 held-out strings of the demo task (`cola-diffusers eval run --tasks
reverse_digits`) with each record's official per-record noise, greedy, scored by exact match. Writes
`sweep_demo.csv`, `sweep_demo.json` and `sweep_demo.png` into `--output` and prints a Markdown table.
"""

import argparse
import csv
import json
import os
import time

import torch
from tqdm.auto import tqdm

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.demo import DEMO_MODEL_PATH
from cola_diffusers.evaluation.data import demo_records, model_input
from cola_diffusers.evaluation.generation import generate_batch
from cola_diffusers.evaluation.scoring import is_correct
from cola_diffusers.evaluation.settings import EvalSettings
from cola_diffusers.schedulers import SCHEDULERS, scheduler_from_name


STEPS = (1, 2, 4, 8, 16, 32)
GUIDANCE = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0)


def measure(pipe, model, records, seeds, batch_size, **settings) -> dict:
    """Accuracy (mean over seeds, percent), new tokens per second and DiT evaluations per block of one setting."""
    settings = EvalSettings(model=model, **settings)
    accuracies, tokens, seconds = [], 0, 0.0
    for seed in seeds:
        correct = 0
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            token_ids = pipe.tokenize(prompt=[model_input(record) for record in batch])
            started = time.perf_counter()
            texts = generate_batch(pipe, batch, token_ids, seed, settings)
            seconds += time.perf_counter() - started
            # New tokens: the answer's and the stop token.
            tokens += sum(len(pipe.tokenizer(text)["input_ids"]) + 1 for text in texts)
            correct += sum(is_correct("reverse_digits", {**r, "generate": t}) for r, t in zip(batch, texts))
        accuracies.append(100.0 * correct / len(records))
    pipe.scheduler.set_timesteps(settings.num_inference_steps)
    mean = sum(accuracies) / len(accuracies)
    spread = (sum((a - mean) ** 2 for a in accuracies) / max(len(accuracies) - 1, 1)) ** 0.5
    return {
        **{key: settings.__dict__[key] for key in ("scheduler", "num_inference_steps", "guidance_scale")},
        "dit_evaluations_per_block": len(pipe.scheduler.timesteps),
        "accuracy": round(mean, 2),
        "stderr": round(spread / len(accuracies) ** 0.5, 2) if len(accuracies) > 1 else None,
        "tokens_per_second": round(tokens / seconds, 1),
    }


def plot(rows: list[dict], path: str, guidance: float, steps: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_steps, by_guidance) = plt.subplots(1, 2, figsize=(11, 4))
    for name in SCHEDULERS:
        points = [row for row in rows if row["sweep"] == "steps" and row["scheduler"] == name]
        by_steps.plot([p["num_inference_steps"] for p in points], [p["accuracy"] for p in points], "o-", label=name)
    by_steps.set(xscale="log", xlabel="steps per block", ylabel="exact match, % (500 held-out strings)")
    by_steps.set_xticks(STEPS, [str(steps) for steps in STEPS])
    by_steps.set_title(f"Demo task: accuracy against steps (guidance {guidance:g})")
    by_steps.legend()
    points = [row for row in rows if row["sweep"] == "guidance"]
    by_guidance.plot([p["guidance_scale"] for p in points], [p["accuracy"] for p in points], "o-")
    per_block = f"{steps} step{'' if steps == 1 else 's'} per block"
    by_guidance.set(xlabel="guidance scale", ylabel="exact match, %", title=f"Against guidance ({per_block})")
    for axis in (by_steps, by_guidance):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="benchmarks/sweep_demo")
    parser.add_argument("--seeds", type=int, default=2, help="Noise seeds, from the official 66 on.")
    parser.add_argument("--limit", type=int, default=500, help="Held-out strings per setting.")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--model", default=DEMO_MODEL_PATH, help="The checkpoint to sweep.")
    parser.add_argument("--guidance", type=float, default=7.0, help="Guidance of the steps sweep.")
    parser.add_argument("--steps", type=int, default=16, help="Steps per block of the guidance sweep.")
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    pipe = ColaDLMPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    default_config = pipe.scheduler.config
    records, seeds = demo_records()[: args.limit], tuple(range(66, 66 + args.seeds))
    settings = [("steps", name, steps, args.guidance) for name in SCHEDULERS for steps in STEPS]
    settings += [("guidance", "block-causal", args.steps, guidance) for guidance in GUIDANCE]
    rows = []
    for sweep, name, steps, guidance in tqdm(settings, desc="settings"):
        pipe.scheduler = scheduler_from_name(name, default_config)
        row = measure(
            pipe,
            args.model,
            records,
            seeds,
            args.batch_size,
            scheduler=name,
            num_inference_steps=steps,
            guidance_scale=guidance,
        )
        rows.append({"sweep": sweep, **row})

    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "sweep_demo.json"), "w") as file:
        json.dump({"records": len(records), "seeds": list(seeds), "rows": rows}, file, indent=2)
    with open(os.path.join(args.output, "sweep_demo.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, os.path.join(args.output, "sweep_demo.png"), args.guidance, args.steps)

    print("| sweep | scheduler | steps | DiT evaluations / block | guidance | exact match % | ± | tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['sweep']} | {row['scheduler']} | {row['num_inference_steps']} | "
            f"{row['dit_evaluations_per_block']} | {row['guidance_scale']:g} | {row['accuracy']:.2f} | "
            f"{row['stderr'] if row['stderr'] is not None else ''} | {row['tokens_per_second']:.0f} |"
        )
    for name in SCHEDULERS:
        points = [row for row in rows if row["sweep"] == "steps" and row["scheduler"] == name]
        reference = next(point["accuracy"] for point in points if point["num_inference_steps"] == 16)
        fewest = min(point["num_inference_steps"] for point in points if point["accuracy"] >= reference - 1)
        print(f"{name}: {fewest} steps are within 1 point of its 16-step accuracy ({reference:.2f}%)")


if __name__ == "__main__":
    main()
