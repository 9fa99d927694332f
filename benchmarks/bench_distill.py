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
The distilled demo model against its teacher, measured in one run.

    python benchmarks/bench_distill.py                  # demo teacher (16 steps, CFG 7) vs demo-fast (1 step)

For batch 1 and 64 it times both end to end (`gen_length` new tokens per prompt, every block generated), counts
DiT forwards and matmul + attention FLOPs per generated token, and scores both on the demo task's 500 held-out
strings with the official per-record noise. Writes JSON and a PNG into `--output` and prints a Markdown table.
"""

import argparse
import json
import os
import sys

import torch

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.demo import DEMO_FAST_MODEL_PATH, DEMO_MODEL_PATH, demo_examples, demo_prompt
from cola_diffusers.evaluation.data import demo_records, model_input
from cola_diffusers.evaluation.generation import generate_batch
from cola_diffusers.evaluation.scoring import is_correct
from cola_diffusers.evaluation.settings import EvalSettings


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_generate import count_flops, count_forwards, measure  # noqa: E402


def accuracy(pipe: ColaDLMPipeline, model: str, steps: int, guidance: float) -> float:
    """Exact match (percent) on the 500 held-out strings, greedy, seed 66."""
    records, correct = demo_records(), 0
    settings = EvalSettings(model=model, num_inference_steps=steps, guidance_scale=guidance)
    for start in range(0, len(records), 100):
        batch = records[start : start + 100]
        token_ids = pipe.tokenize(prompt=[model_input(record) for record in batch])
        texts = generate_batch(pipe, batch, token_ids, 66, settings)
        correct += sum(is_correct("reverse_digits", {**r, "generate": t}) for r, t in zip(batch, texts))
    return 100.0 * correct / len(records)


def speed(pipe: ColaDLMPipeline, batch_size: int, gen_length: int, repeats: int, **options) -> dict:
    """Tokens/s, DiT forwards and GFLOP per generated token of one batch of held-out prompts."""
    prompts = [demo_prompt(digits) for digits in demo_examples("held_out")[:batch_size]]
    calls, handle = count_forwards(pipe.transformer)

    def run():
        calls.clear()
        generator = torch.Generator().manual_seed(0)
        return pipe(prompts, gen_length=gen_length, generator=generator, eos_early_stop=False, **options)

    seconds, output = measure(run, "cpu", repeats)
    handle.remove()
    tokens = batch_size * gen_length
    generated_latents = output.latents.shape[1]
    return {
        "tokens_per_s": tokens / seconds,
        # The prefill is one pass over the prompt, not a per-token cost.
        "dit_forwards_per_token": (len(calls) - 1) / generated_latents,
        "gflop_per_token": count_flops(run) / 1e9 / tokens,
    }


def plot(rows: list[dict], path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_speed, by_accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    batch_sizes = sorted({row["batch_size"] for row in rows})
    names, width = ["teacher", "student"], 0.38
    labels = {}
    for offset, name in zip((-width / 2, width / 2), names):
        points = [next(r for r in rows if r["model"] == name and r["batch_size"] == b) for b in batch_sizes]
        labels[name] = f"{name}: {points[0]['steps']} step(s), guidance {points[0]['guidance_scale']:g}"
        bars = by_speed.bar(
            [i + offset for i in range(len(batch_sizes))],
            [p["tokens_per_s"] for p in points],
            width,
            label=labels[name],
        )
        by_speed.bar_label(bars, fmt="%.0f")
    by_speed.set(xticks=range(len(batch_sizes)), xticklabels=[f"batch {b}" for b in batch_sizes], ylabel="tokens/s")
    by_speed.set(yscale="log", title="Demo model, CPU: generation speed")
    by_speed.legend(loc="upper left")
    accuracies = [next(r["accuracy"] for r in rows if r["model"] == name) for name in names]
    bars = by_accuracy.bar([labels[name].replace(": ", "\n") for name in names], accuracies, color=["C0", "C1"])
    by_accuracy.bar_label(bars, fmt="%.1f")
    by_accuracy.set(ylabel="exact match, % (500 held-out strings)", title="Demo task accuracy", ylim=(0, 100))
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=DEMO_MODEL_PATH)
    parser.add_argument("--student", default=DEMO_FAST_MODEL_PATH)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--gen-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=os.path.join("benchmarks", "distill"))
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    # The teacher as the demo task is scored, the student with its checkpoint's defaults (one unguided step).
    models = {"teacher": (args.teacher, 16, 7.0)}
    student = ColaDLMPipeline.from_pretrained(args.student)
    models["student"] = (args.student, student.config.default_num_inference_steps, 1.0)
    rows = []
    for name, (path, steps, guidance) in models.items():
        pipe = ColaDLMPipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        score = accuracy(pipe, path, steps, guidance)
        for batch_size in args.batch_sizes:
            options = {"num_inference_steps": steps, "guidance_scale": guidance, "output_type": "latent"}
            row = {"model": name, "steps": steps, "guidance_scale": guidance, "batch_size": batch_size}
            row.update(speed(pipe, batch_size, args.gen_length, args.repeats, **options), accuracy=score)
            rows.append(row)
            print(row, flush=True)
    for row in rows:
        teacher = next(r for r in rows if r["model"] == "teacher" and r["batch_size"] == row["batch_size"])
        row["speedup"] = row["tokens_per_s"] / teacher["tokens_per_s"]

    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "bench_distill.json"), "w") as file:
        json.dump({"gen_length": args.gen_length, "threads": torch.get_num_threads(), "rows": rows}, file, indent=2)
    plot(rows, os.path.join(args.output, "bench_distill.png"))
    print(
        "| model | steps | guidance | batch | tokens/s | × teacher | DiT forwards / token | GFLOP / token | exact match % |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['steps']} | {row['guidance_scale']:g} | {row['batch_size']} | "
            f"{row['tokens_per_s']:.0f} | {row['speedup']:.2f} | {row['dit_forwards_per_token']:.3f} | "
            f"{row['gflop_per_token']:.4f} | {row['accuracy']:.1f} |"
        )


if __name__ == "__main__":
    main()
