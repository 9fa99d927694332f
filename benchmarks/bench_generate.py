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
Generation speed of ColaDLMPipeline against the official sampler's loop structure, measured in one run.

    python benchmarks/bench_generate.py                            # tiny and mid models, batch 1, 8, 64
    python benchmarks/bench_generate.py --configs release --batch-sizes 1 8 64 --device cuda --dtype bf16

For every model config and batch size it times the pipeline (one batched DiT pass per step, static caches,
SDPA through diffusers' dispatcher) and, unless `--skip-official`, `official_loop.official_generate` on the same
weights, prompts and noise. It reports tokens/s, DiT forwards per generated token and peak memory, prints a table
and writes JSON. Models are randomly initialised: speed does not depend on the weights.

`--count-flops` also runs both once under `torch.utils.flop_counter.FlopCounterMode` and reports the matmul and
attention FLOPs per generated token: their ratio is what a faster implementation of the same passes can gain when
both sides are bound by arithmetic.
"""

import argparse
import json
import os
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from cola_diffusers import (
    AutoencoderKLColaText,
    ColaDLMPipeline,
    ColaTransformer1DModel,
    FlowMatchBlockCausalScheduler,
)
from cola_diffusers.loaders.tokenizer import load_tokenizer


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_loop import official_generate  # noqa: E402


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_FILE = os.path.join(REPO_ROOT, "tests", "fixtures", "cola_reference", "tokenizer.json")
CONFIGS = {
    "tiny": {
        "transformer": {"num_layers": 2, "num_attention_heads": 4, "attention_head_dim": 16, "rope_dim": 12},
        "vae": {
            "hidden_size": 64,
            "num_attention_heads": 4,
            "ffn_dim": 128,
            "encoder_num_blocks": 2,
            "decoder_num_blocks": 2,
        },
    },
    "mid": {
        "transformer": {"num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 64, "rope_dim": 48},
        "vae": {
            "hidden_size": 256,
            "num_attention_heads": 4,
            "ffn_dim": 1024,
            "encoder_num_blocks": 2,
            "decoder_num_blocks": 2,
        },
    },
    "release": {
        "transformer": {
            "num_layers": 24,
            "num_attention_heads": 16,
            "attention_head_dim": 128,
            "rope_dim": 96,
            "mlp_ratio": 4.0,
        },
        "vae": {
            "hidden_size": 1536,
            "num_attention_heads": 12,
            "ffn_dim": 6144,
            "encoder_num_blocks": 4,
            "decoder_num_blocks": 4,
            "vocab_size": 100278,
        },
    },
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build_pipeline(name: str, block_size: int, device: str, dtype: torch.dtype) -> ColaDLMPipeline:
    config = CONFIGS[name]
    transformer = ColaTransformer1DModel(in_channels=16, block_size=block_size, **config["transformer"])
    vae = AutoencoderKLColaText(**{"vocab_size": 384, "latent_dim": 16, "block_size": block_size, **config["vae"]})
    pipe = ColaDLMPipeline(
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=FlowMatchBlockCausalScheduler(),
        tokenizer=load_tokenizer(TOKENIZER_FILE),
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def make_prompts(pipe: ColaDLMPipeline, batch_size: int, prompt_tokens: int) -> list[str]:
    """Prompts of about `prompt_tokens` tokens, all different."""
    words = "the river runs past the old mill and the children play by the water in the late summer light".split()
    prompts = []
    for index in range(batch_size):
        text = " ".join(words[(index + i) % len(words)] for i in range(prompt_tokens))
        ids = pipe.tokenizer(text)["input_ids"][:prompt_tokens]
        prompts.append(pipe.tokenizer.decode(ids))
    return prompts


def count_dit_forwards(pipe: ColaDLMPipeline):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def measure(run, device: str, repeats: int) -> tuple[float, object]:
    """Best wall time of `repeats` runs after one warm-up."""
    result = run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times), result


def count_flops(run) -> int:
    """Matmul and attention FLOPs of one call of `run` (the CPU SDPA kernel counted like the GPU ones)."""

    def cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={cpu_sdpa: cpu_sdpa_flops}) as counter:
        run()
    return counter.get_total_flops()


def benchmark(args) -> list[dict]:
    rows = []
    for name in args.configs:
        pipe = build_pipeline(name, args.block_length, args.device, DTYPES[args.dtype])
        if args.compile:
            pipe.transformer.compile_repeated_blocks(fullgraph=True)
        for batch_size in args.batch_sizes:
            prompts = make_prompts(pipe, batch_size, args.prompt_tokens)
            kwargs = {
                "gen_length": args.gen_length,
                "num_inference_steps": args.steps,
                "guidance_scale": args.guidance,
            }
            row = {
                "config": name,
                "batch_size": batch_size,
                "device": args.device,
                "dtype": args.dtype,
                "compiled": args.compile,
            }

            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            calls, handle = count_dit_forwards(pipe)

            def run_pipeline():
                calls.clear()
                generator = torch.Generator().manual_seed(0)
                return pipe(prompts, generator=generator, eos_early_stop=False, output_type="latent", **kwargs)

            seconds, output = measure(run_pipeline, args.device, args.repeats)
            handle.remove()
            num_blocks = output.latents.shape[1] // args.block_length
            generated_latents = num_blocks * args.block_length
            # The prefill is one pass over the prompt, not a per-token cost.
            row["pipeline_tokens_per_s"] = batch_size * args.gen_length / seconds
            row["pipeline_seconds"] = seconds
            row["pipeline_dit_forwards_per_token"] = (len(calls) - 1) / generated_latents
            row["pipeline_peak_memory_mib"] = peak_memory_mib(args.device)
            if args.count_flops:
                row["pipeline_gflop_per_token"] = count_flops(run_pipeline) / 1e9 / (batch_size * args.gen_length)

            if not args.skip_official:
                official_seconds, (sequences, _, counts) = measure(
                    lambda: official_generate(pipe, prompts, generator=torch.Generator().manual_seed(0), **kwargs),
                    args.device,
                    args.repeats,
                )
                row["official_tokens_per_s"] = batch_size * args.gen_length / official_seconds
                row["official_seconds"] = official_seconds
                row["official_dit_forwards_per_token"] = (counts["dit_forwards"] - 1) / generated_latents
                row["speedup"] = official_seconds / seconds
                row["same_tokens"] = bool(torch.equal(sequences.cpu(), output.sequences.cpu()))
                if args.count_flops:
                    official_flops = count_flops(
                        lambda: official_generate(pipe, prompts, generator=torch.Generator().manual_seed(0), **kwargs)
                    )
                    row["official_gflop_per_token"] = official_flops / 1e9 / (batch_size * args.gen_length)
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    text = (
        f"{row['config']:>8}{' compiled' if row['compiled'] else ''} batch {row['batch_size']:>3}: pipeline {row['pipeline_tokens_per_s']:9.1f} tok/s, "
        f"{row['pipeline_dit_forwards_per_token']:.3f} DiT fwd/token, peak {row['pipeline_peak_memory_mib']:8.0f} MiB"
    )
    if "official_tokens_per_s" in row:
        text += (
            f" | official loop {row['official_tokens_per_s']:9.1f} tok/s, "
            f"{row['official_dit_forwards_per_token']:.3f} DiT fwd/token | speedup {row['speedup']:.2f}x"
            f"{'' if row['same_tokens'] else ' (tokens differ)'}"
        )
    if "official_gflop_per_token" in row:
        text += (
            f" | GFLOP/token {row['pipeline_gflop_per_token']:.3f} vs {row['official_gflop_per_token']:.3f} "
            f"({row['official_gflop_per_token'] / row['pipeline_gflop_per_token']:.2f}x)"
        )
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["tiny", "mid"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-length", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-official", action="store_true", help="Time the pipeline only.")
    parser.add_argument("--compile", action="store_true", help="torch.compile the pipeline's repeated DiT blocks.")
    parser.add_argument("--count-flops", action="store_true", help="Also count matmul and attention FLOPs.")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "bench_generate.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    rows = benchmark(args)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(
            {"settings": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows},
            file,
            indent=2,
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
