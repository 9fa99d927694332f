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

"""Converts an official Cola-DLM checkpoint (`cola_dlm/cola_dit`, `cola_dlm/cola_vae`, `tokenizer.json`) into a
diffusers-format `ColaDLMPipeline` folder; the same as `cola-diffusers convert`, with the same options.

    python scripts/convert_cola_dlm_to_diffusers.py --checkpoint_path ByteDance-Seed/Cola-DLM --output_path cola-dlm --dtype bf16

The weights are written in `--dtype` as plain `diffusion_pytorch_model.safetensors` files (no variant files): load the
folder with `ColaDLMPipeline.from_pretrained("cola-dlm", dtype=torch.bfloat16)`.

An output folder that is not empty is refused, before anything is loaded: saving into it would silently replace
some of its files and mix the rest with the new ones. `--overwrite` writes into it anyway (files of the same name
are replaced, the others are kept).
"""

import argparse
import os
import sys

from cola_diffusers.cli import main


def refuse_non_empty_output(argv: list[str]) -> None:
    """Exits with code 2 when `--output_path` names a file, or a folder with something in it, without `--overwrite`."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output_path", "--output-path", dest="output_path")
    parser.add_argument("--overwrite", action="store_true")
    known, _ = parser.parse_known_args(argv)
    path = known.output_path
    if path is None or known.overwrite or not os.path.exists(path):
        return  # a missing --output_path is reported by the command's own parser
    if not os.path.isdir(path):
        fail(f"--output_path {path} exists and is not a folder.")
    if os.listdir(path):
        fail(f"--output_path {path} is not empty; pass --overwrite to replace what is there.")


def fail(message: str) -> None:
    sys.stderr.write(f"convert_cola_dlm_to_diffusers.py: error: {message}\n")
    sys.exit(2)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if not {"-h", "--help"} & set(arguments):
        refuse_non_empty_output(arguments)
    main(["convert", *arguments])
