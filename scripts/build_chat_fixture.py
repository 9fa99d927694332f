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

"""Builds `tests/fixtures/chat_base`: a tiny pipeline whose VAE can read and write chat transcripts.

    python scripts/build_chat_fixture.py                 # about a minute on 2 CPU cores

A character tokenizer with the letters of the `text` chat format's role prefixes and its stop token `■`, a Text VAE
trained (Stage 1, 600 steps) on 2,000 packed `User: 1234\\nAssistant: 4321■\\n` transcripts, and an untrained
DiT: the base an SFT run starts from in `tests/training/test_sft.py`.
"""

import argparse
import json
import os
import random
import tempfile

from cola_diffusers.demo import build_demo_tokenizer
from cola_diffusers.training import TrainingConfig, train


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO_ROOT, "tests", "fixtures", "chat_base")
# One token per character of the transcripts.
SYMBOLS = list(dict.fromkeys("0123456789UserAistn: \n■"))
MODEL = {
    "vae_config": {
        "latent_dim": 8,
        "hidden_size": 64,
        "num_attention_heads": 2,
        "ffn_dim": 128,
        "encoder_num_blocks": 1,
        "decoder_num_blocks": 1,
        "block_size": 4,
    },
    "transformer_config": {
        "num_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": 32,
        "rope_dim": 16,
        "block_size": 4,
    },
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=FIXTURE)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work_dir:
        tokenizer_file = os.path.join(work_dir, "tokenizer.json")
        build_demo_tokenizer(SYMBOLS).save(tokenizer_file)
        corpus = os.path.join(work_dir, "transcripts.jsonl")
        numbers = [f"{number:04d}" for number in random.Random(0).sample(range(10000), 2000)]
        with open(corpus, "w") as file:
            for digits in numbers:
                file.write(json.dumps({"text": f"User: {digits}\nAssistant: {digits[::-1]}■\n"}) + "\n")
        train(
            TrainingConfig(
                stage="vae",
                train_file=corpus,
                packing=True,
                output_dir=args.output,
                overwrite_output_dir=True,  # the fixture is rebuilt in place
                tokenizer_file=tokenizer_file,
                max_length=32,
                batch_size=32,
                learning_rate=3e-3,
                kl_weight=1e-3,
                max_steps=args.steps,
                log_every=100,
                **MODEL,
            )
        )
    os.remove(os.path.join(args.output, "loss_history.json"))


if __name__ == "__main__":
    main()
