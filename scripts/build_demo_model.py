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

"""Trains the demo model (four-digit reversal) from scratch, or distils it to one step per block.

    python scripts/build_demo_model.py --work-dir runs/demo                      # writes runs/demo/model
    python scripts/build_demo_model.py --work-dir runs/demo --replace-embedded   # replaces the shipped model
    python scripts/build_demo_model.py --work-dir runs/demo --distill            # writes runs/demo/model-fast

Stage 1 trains the Text VAE, Stage 2 the DiT prior on the VAE's latents; the result goes to `--output` (default
`<work-dir>/model`), or, with `--replace-embedded`, replaces the shipped `src/cola_diffusers/demo/reverse_digits`.
`--distill` instead distils `--teacher` (default the shipped model) into a student that samples with one unguided
step per block (default `<work-dir>/model-fast`; `--replace-embedded` replaces `demo/reverse_digits_fast`).
Then measure it with `cola-diffusers eval run --model <folder> --tasks reverse_digits`.
"""

import argparse
import os
import shutil

from cola_diffusers.demo import (
    DEMO_FAST_MODEL_PATH,
    DEMO_MODEL_PATH,
    build_demo_tokenizer,
    demo_answer,
    demo_examples,
    demo_prompt,
)
from cola_diffusers.training import TrainingConfig, train


MODEL = {
    "vae_config": {
        "latent_dim": 16,
        "hidden_size": 128,
        "num_attention_heads": 4,
        "ffn_dim": 512,
        "encoder_num_blocks": 2,
        "decoder_num_blocks": 2,
        "block_size": 4,
    },
    "transformer_config": {
        "num_layers": 4,
        "num_attention_heads": 4,
        "attention_head_dim": 32,
        "rope_dim": 16,
        "block_size": 4,
    },
}
DEMO_MAX_SEQUENCE_LENGTH = 128
COMMON = {
    "max_length": 12,
    "learn_padding": True,
    "block_sizes": [4],
    "batch_size": 64,
    "learning_rate": 1e-3,
    "log_every": 100,
    # A rebuild in the same work folder replaces the earlier build.
    "overwrite_output_dir": True,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", "--work_dir", dest="work_dir", default="runs/demo", help="Corpus and stages.")
    parser.add_argument("--output", help="Folder of the trained pipeline (default: <work-dir>/model).")
    parser.add_argument(
        "--replace-embedded", action="store_true", help="Replace the shipped src/cola_diffusers/demo/reverse_digits."
    )
    parser.add_argument("--vae-steps", "--vae_steps", dest="vae_steps", type=int, default=1500)
    parser.add_argument("--prior-steps", "--prior_steps", dest="prior_steps", type=int, default=3000)
    parser.add_argument("--distill", action="store_true", help="Distil --teacher instead of training from scratch.")
    parser.add_argument("--teacher", default=DEMO_MODEL_PATH, help="The model --distill distils.")
    parser.add_argument("--distill-steps", "--distill_steps", dest="distill_steps", type=int, default=1500)
    parser.add_argument(
        "--distill-prompts",
        "--distill_prompts",
        dest="distill_prompts",
        type=int,
        default=None,
        help="Distil on the first this many training prompts (default all 9,500).",
    )
    args = parser.parse_args()
    if args.replace_embedded and args.output is not None:
        parser.error("give --output or --replace-embedded, not both")
    os.makedirs(args.work_dir, exist_ok=True)
    if args.distill:
        output = DEMO_FAST_MODEL_PATH if args.replace_embedded else args.output
        distill(args.work_dir, args.teacher, output or os.path.join(args.work_dir, "model-fast"), args)
        return
    output = DEMO_MODEL_PATH if args.replace_embedded else args.output or os.path.join(args.work_dir, "model")

    tokenizer_file = os.path.join(args.work_dir, "tokenizer.json")
    build_demo_tokenizer().save(tokenizer_file)
    corpus = os.path.join(args.work_dir, "train.txt")
    with open(corpus, "w") as file:
        file.write("\n".join(demo_prompt(digits) + demo_answer(digits) for digits in demo_examples("train")))

    vae_dir, prior_dir = os.path.join(args.work_dir, "vae"), os.path.join(args.work_dir, "prior")
    train(
        TrainingConfig(
            stage="vae",
            train_file=corpus,
            output_dir=vae_dir,
            tokenizer_file=tokenizer_file,
            max_steps=args.vae_steps,
            kl_weight=1e-3,
            **MODEL,
            **COMMON,
        )
    )
    pipe, _ = train(
        TrainingConfig(
            stage="prior",
            train_file=corpus,
            output_dir=prior_dir,
            pretrained_model=vae_dir,
            max_steps=args.prior_steps,
            sample_posterior=False,  # the shipped model's prior was trained on posterior means
            **COMMON,
        )
    )

    # Trained on 12-token rows; the recorded context leaves room for the command line's 64 new tokens.
    pipe.tokenizer.model_max_length = DEMO_MAX_SEQUENCE_LENGTH
    save(pipe, output)


def distill(work_dir: str, teacher: str, output: str, args: argparse.Namespace):
    """
    Distils the teacher (16 steps, guidance 7) into a one-step student on the training prompts; the teacher's
    blocks of 8 new tokens cover the answer and its end.
    """
    prompts = os.path.join(work_dir, "prompts.txt")
    with open(prompts, "w") as file:
        file.write("\n".join(demo_prompt(digits) for digits in demo_examples("train")[: args.distill_prompts]))
    pipe, _ = train(
        TrainingConfig(
            stage="distill",
            train_file=prompts,
            output_dir=os.path.join(work_dir, "distill"),
            pretrained_model=teacher,
            max_length=8,
            gen_length=8,
            teacher_batch_size=500,
            num_inference_steps=1,
            batch_size=min(64, args.distill_prompts or 64),
            learning_rate=2e-4,
            max_steps=args.distill_steps,
            log_every=100,
            overwrite_output_dir=True,  # a rebuild reuses the teacher's couplings of the work folder
        )
    )
    save(pipe, output)


def save(pipe, output: str):
    """Saves the pipeline; a shipped model is replaced whole, so that no stale file of the old one remains."""
    if output in (DEMO_MODEL_PATH, DEMO_FAST_MODEL_PATH):
        shutil.rmtree(output, ignore_errors=True)
    pipe.save_pretrained(output)
    print(f"Wrote the demo model to {output}")


if __name__ == "__main__":
    main()
