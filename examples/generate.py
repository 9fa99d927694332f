"""Generates text with a Cola-DLM checkpoint (official layout or diffusers format, local or a Hub repo id).

    python examples/generate.py "The capital of France is" --model ByteDance-Seed/Cola-DLM --gen-length 64
"""

import argparse
import os

import torch

from cola_diffusers import ColaDLMPipeline


TINY_REFERENCE_CHECKPOINT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "cola_reference")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="+", help="One or more prompts.")
    parser.add_argument("--model", default=TINY_REFERENCE_CHECKPOINT, help="Checkpoint folder or Hub repo id.")
    parser.add_argument("--gen-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="Load the weights in bfloat16.")
    args = parser.parse_args()

    pipe = ColaDLMPipeline.from_pretrained(args.model, dtype=torch.bfloat16 if args.bf16 else None)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    output = pipe(
        args.prompt,
        gen_length=args.gen_length,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
    )
    for prompt, text in zip(args.prompt, output.texts):
        print(f"{prompt!r} -> {text!r}")


if __name__ == "__main__":
    main()
