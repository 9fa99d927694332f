"""Converts an official Cola-DLM checkpoint (`cola_dlm/cola_dit`, `cola_dlm/cola_vae`, `tokenizer.json`) into a
diffusers-format `ColaDLMPipeline` folder.

    python scripts/convert_cola_dlm_to_diffusers.py --checkpoint_path ByteDance-Seed/Cola-DLM --output_path cola-dlm
"""

import argparse
import os

import torch

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.loaders.official_checkpoint import is_official_layout


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="Official checkpoint folder or Hub repo id.")
    parser.add_argument("--output_path", required=True, help="Folder to write the diffusers-format pipeline to.")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="Storage dtype of the weights.")
    args = parser.parse_args(argv)

    if os.path.isdir(args.checkpoint_path) and not is_official_layout(args.checkpoint_path):
        parser.error(f"--checkpoint_path {args.checkpoint_path} is not in the official layout (no `cola_dlm/` folder).")
    pipe = ColaDLMPipeline.from_pretrained(args.checkpoint_path, dtype=DTYPES[args.dtype])
    pipe.save_pretrained(args.output_path)
    print(f"Saved a diffusers-format ColaDLMPipeline ({args.dtype}) to {args.output_path}")


if __name__ == "__main__":
    main()
