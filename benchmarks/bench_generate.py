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
    python benchmarks/bench_generate.py --configs mid --official-src ../shared/reference/cola-dlm-official

For every model config and batch size it times the pipeline (one batched DiT pass per step, static caches,
SDPA through diffusers' dispatcher) and, unless `--skip-official`, `official_loop.official_generate` on the same
weights, prompts and noise. It reports tokens/s, DiT forwards per generated token and peak memory, prints a table
and writes JSON. Models are randomly initialised: speed does not depend on the weights.

`--official-src` names a checkout of the official Cola-DLM code (the folder holding its `cola_dlm` package) and also
times its own sampler, `generate_task_repaint_inference`, with its "naive" and "sdpa" DiT attention: the official
models get random weights and are saved in the release layout (in a temporary folder), the pipeline is loaded from
there, and the official sampler's noise is given to the pipeline to compare greedy tokens. On CUDA the official code
runs under its own bfloat16 autocast whatever `--dtype`; on the CPU its CUDA autocast and bfloat16 casts are switched
off so that it computes in float32. The official package needs `pip install einops rotary-embedding-torch`, which the
project itself does not.

`--count-flops` also runs both once under `torch.utils.flop_counter.FlopCounterMode` and reports the matmul and
attention FLOPs per generated token: their ratio is what a faster implementation of the same passes can gain when
both sides are bound by arithmetic.
"""

import argparse
import contextlib
import functools
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import types

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
OFFICIAL_ATTENTION_BACKENDS = ("naive", "sdpa")


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
    return prepare(pipe, device, dtype)


def prepare(pipe: ColaDLMPipeline, device: str, dtype: torch.dtype) -> ColaDLMPipeline:
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def official_configs(pipe: ColaDLMPipeline) -> tuple[dict, dict]:
    """The pipeline's model sizes as the official `ColaDiTConfig` and `ColaTextVAEConfig` fields."""
    dit, vae = pipe.transformer.config, pipe.vae.config
    width = dit.hidden_size or dit.num_attention_heads * dit.attention_head_dim
    dit_config = {
        "txt_in_channels": dit.in_channels,
        "txt_out_channels": dit.out_channels or dit.in_channels,
        "txt_dim": width,
        "emb_dim": width,
        "heads": dit.num_attention_heads,
        "head_dim": dit.attention_head_dim,
        "expand_ratio": int(dit.mlp_ratio),
        "num_layers": dit.num_layers,
        "rope_dim": dit.rope_dim,
        "block_size": dit.block_size,
    }
    vae_config = {
        "vocab_size": vae.vocab_size,
        "latent_dim": vae.latent_dim,
        "dim": vae.hidden_size,
        "num_heads": vae.num_attention_heads,
        "ffn_dim": vae.ffn_dim,
        "encoder_num_blocks": vae.encoder_num_blocks,
        "decoder_num_blocks": vae.decoder_num_blocks,
        "block_size": vae.block_size,
    }
    return dit_config, vae_config


class RecordingTokenizer:
    """A `tokenizers.Tokenizer` that keeps the token ids it last decoded: the official sampler's output."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.decoded = None

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def decode_batch(self, ids, **kwargs):
        self.decoded = ids
        return self.tokenizer.decode_batch(ids, **kwargs)


class OfficialSampler:
    """The official code's `generate_task_repaint_inference` on official models with random weights."""

    def __init__(self, source: str, device: str):
        sys.path.insert(0, os.path.abspath(source))
        import cola_dlm
        from cola_dlm import inference, modeling_cola_dit, modeling_cola_vae
        from tokenizers import Tokenizer
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()  # of `save_pretrained`
        if device == "cpu":
            # The official code hard-codes CUDA autocast and bfloat16 casts: on the CPU it computes in float32.
            float32_torch = types.ModuleType("torch")
            float32_torch.__dict__.update(
                autocast=lambda *args, **kwargs: contextlib.nullcontext(),
                bfloat16=torch.float32,
                __getattr__=lambda name: getattr(torch, name),
            )
            for module in (inference, modeling_cola_dit, modeling_cola_vae):
                module.torch = float32_torch
        self.cola_dlm, self.inference, self.set_attn_backend = cola_dlm, inference, modeling_cola_dit.set_attn_backend
        self.tokenizer = RecordingTokenizer(Tokenizer.from_file(TOKENIZER_FILE))
        self.device = device

    def load(self, pipe: ColaDLMPipeline, dtype: torch.dtype) -> ColaDLMPipeline:
        """
        Builds official models of `pipe`'s sizes with random weights, saves them in the release layout and returns
        the pipeline loaded from it.
        """
        dit_config, vae_config = official_configs(pipe)
        with torch.device(self.device):
            self.dit = self.cola_dlm.ColaDiTModel(self.cola_dlm.ColaDiTConfig(**dit_config)).eval()
            self.vae = self.cola_dlm.ColaTextVAEModel(self.cola_dlm.ColaTextVAEConfig(**vae_config)).eval()
        with torch.no_grad():
            for parameter in [*self.dit.parameters(), *self.vae.parameters()]:
                if not parameter.any():  # zero-initialised layers would make every velocity zero
                    parameter.normal_(0, 0.02)
        self.dit_calls, _ = count_forwards(self.dit)
        with tempfile.TemporaryDirectory() as folder:
            self.dit.save_pretrained(os.path.join(folder, "cola_dlm", "cola_dit"))
            self.vae.save_pretrained(os.path.join(folder, "cola_dlm", "cola_vae"))
            shutil.copy(TOKENIZER_FILE, folder)
            return prepare(ColaDLMPipeline.from_pretrained(folder), self.device, dtype)

    def generate(self, prompts, backend, gen_length, num_inference_steps, guidance_scale) -> list[list[int]]:
        """Greedy tokens of every prompt, with noise from the global generator seeded with 0."""
        self.set_attn_backend(backend)
        self.dit_calls.clear()
        torch.manual_seed(0)
        with contextlib.redirect_stdout(io.StringIO()):
            self.inference.generate_task_repaint_inference(
                dit=self.dit,
                vae=self.vae,
                tokenizer=self.tokenizer,
                prompts=[{"id": index, "question": prompt} for index, prompt in enumerate(prompts)],
                task_name="lambada",
                device=torch.device(self.device),
                max_new_tokens=gen_length,
                temperature=0.0,
                guidance_scale=guidance_scale,
                timestep_num=num_inference_steps,
                pad_token_id=self.tokenizer.token_to_id("<|pad|>"),
                eos_token_id=None,
                im_end_token_id=None,
            )
        return self.tokenizer.decoded

    def noise(self, batch_size: int, num_blocks: int, block_size: int) -> torch.Tensor:
        """The noise `generate` draws, block after block, as the pipeline's `latents`."""
        torch.manual_seed(0)
        latent_dim = self.dit.config.txt_in_channels
        blocks = [torch.randn(batch_size * block_size, latent_dim, device=self.device) for _ in range(num_blocks)]
        return torch.cat([block.view(batch_size, block_size, latent_dim) for block in blocks], dim=1)


def make_prompts(pipe: ColaDLMPipeline, batch_size: int, prompt_tokens: int) -> list[str]:
    """Prompts of about `prompt_tokens` tokens, all different."""
    words = "the river runs past the old mill and the children play by the water in the late summer light".split()
    prompts = []
    for index in range(batch_size):
        text = " ".join(words[(index + i) % len(words)] for i in range(prompt_tokens))
        ids = pipe.tokenizer(text)["input_ids"][:prompt_tokens]
        prompts.append(pipe.tokenizer.decode(ids))
    return prompts


def count_forwards(module: torch.nn.Module):
    calls = []
    handle = module.register_forward_pre_hook(lambda module, args: calls.append(1))
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
    official = OfficialSampler(args.official_src, args.device) if args.official_src else None
    for name in args.configs:
        pipe = build_pipeline(name, args.block_length, args.device, DTYPES[args.dtype])
        if official:
            pipe = official.load(pipe, DTYPES[args.dtype])
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
            calls, handle = count_forwards(pipe.transformer)

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
            if official:
                row.update(time_official_code(official, pipe, prompts, kwargs, seconds, num_blocks, args))
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def time_official_code(official, pipe, prompts, kwargs, pipeline_seconds, num_blocks, args) -> dict:
    """
    The official sampler's speed with each attention backend, and whether its greedy tokens are the pipeline's with
    the same noise (over the length both generate).
    """
    noise = official.noise(len(prompts), num_blocks, args.block_length)
    ours = pipe(prompts, latents=noise, eos_early_stop=False, output_type="latent", **kwargs).sequences.tolist()
    stats = {}
    for backend in OFFICIAL_ATTENTION_BACKENDS:
        run = functools.partial(official.generate, prompts, backend, **kwargs)
        seconds, tokens = measure(run, args.device, args.repeats)
        stats[f"official_{backend}_tokens_per_s"] = len(prompts) * args.gen_length / seconds
        stats[f"official_{backend}_seconds"] = seconds
        stats[f"official_{backend}_dit_forwards_per_token"] = (len(official.dit_calls) - 1) / (
            num_blocks * args.block_length
        )
        stats[f"official_{backend}_speedup"] = seconds / pipeline_seconds
        stats[f"official_{backend}_same_tokens"] = all(a[: len(b)] == b[: len(a)] for a, b in zip(tokens, ours))
    return stats


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
    for backend in OFFICIAL_ATTENTION_BACKENDS:
        if f"official_{backend}_tokens_per_s" in row:
            text += (
                f" | official {backend} {row[f'official_{backend}_tokens_per_s']:9.1f} tok/s, "
                f"{row[f'official_{backend}_dit_forwards_per_token']:.3f} DiT fwd/token, "
                f"speedup {row[f'official_{backend}_speedup']:.2f}x"
                f"{'' if row[f'official_{backend}_same_tokens'] else ' (tokens differ)'}"
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
    parser.add_argument("--skip-official", action="store_true", help="Do not time `official_loop`.")
    parser.add_argument(
        "--official-src", metavar="PATH", help="A checkout of the official Cola-DLM code: also time its sampler."
    )
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
