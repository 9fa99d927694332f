"""Trains the embedded demo model (four-digit reversal) from scratch and writes it into the package.

    python scripts/build_demo_model.py --work_dir runs/demo

Stage 1 trains the Text VAE, Stage 2 the DiT prior on the VAE's latents; the result replaces
`src/cola_diffusers/demo/reverse_digits`. Then measure it with `cola-diffusers eval run --tasks reverse_digits`.
"""

import argparse
import os
import shutil

from cola_diffusers.demo import DEMO_MODEL_PATH, build_demo_tokenizer, demo_answer, demo_examples, demo_prompt
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
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="runs/demo")
    parser.add_argument("--vae_steps", type=int, default=1500)
    parser.add_argument("--prior_steps", type=int, default=3000)
    args = parser.parse_args()

    os.makedirs(args.work_dir, exist_ok=True)
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
            **COMMON,
        )
    )

    # Trained on 12-token rows; the recorded context leaves room for the command line's 64 new tokens.
    pipe.tokenizer.model_max_length = DEMO_MAX_SEQUENCE_LENGTH
    shutil.rmtree(DEMO_MODEL_PATH, ignore_errors=True)
    pipe.save_pretrained(DEMO_MODEL_PATH)
    print(f"Wrote the demo model to {DEMO_MODEL_PATH}")


if __name__ == "__main__":
    main()
