"""Greedy accuracy of a model on the held-out split of the demo task (four-digit reversal).

    python scripts/evaluate_demo.py [--model PATH] [--limit N]

An answer is right when the generated text, up to the stop token, equals the reversed digits exactly.
"""

import argparse
import json

import torch

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.demo import DEMO_MODEL_PATH, demo_answer, demo_examples, demo_prompt


def held_out_accuracy(pipe: ColaDLMPipeline, limit: int | None = None, batch_size: int = 100, **kwargs) -> float:
    """Share of held-out examples answered exactly, with greedy decoding."""
    examples = demo_examples("held_out")[:limit]
    correct = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        texts = pipe([demo_prompt(digits) for digits in batch], gen_length=6, **kwargs).texts
        correct += sum(text == demo_answer(digits) for text, digits in zip(texts, batch))
    return correct / len(examples)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEMO_MODEL_PATH)
    parser.add_argument("--limit", type=int, default=None, help="Evaluate the first N held-out examples only.")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=7.0)
    args = parser.parse_args()

    pipe = ColaDLMPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    accuracy = held_out_accuracy(
        pipe, args.limit, num_inference_steps=args.steps, guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(0),
    )
    print(json.dumps({"model": args.model, "held_out_accuracy": accuracy, "steps": args.steps,
                      "guidance_scale": args.guidance}))


if __name__ == "__main__":
    main()
