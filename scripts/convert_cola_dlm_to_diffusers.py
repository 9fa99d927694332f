"""Converts an official Cola-DLM checkpoint (`cola_dlm/cola_dit`, `cola_dlm/cola_vae`, `tokenizer.json`) into a
diffusers-format `ColaDLMPipeline` folder; the same as `cola-diffusers convert`.

    python scripts/convert_cola_dlm_to_diffusers.py --checkpoint_path ByteDance-Seed/Cola-DLM --output_path cola-dlm
"""

import sys

from cola_diffusers.cli import main


if __name__ == "__main__":
    main(["convert", *sys.argv[1:]])
