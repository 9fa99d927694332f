"""Where the official release layout keeps its files (no heavy imports, for the command line)."""

import os
import re


# A Hub repo id, `owner/name`.
REPO_ID = re.compile(r"[\w][\w.-]*/[\w][\w.-]*")
OFFICIAL_DIT_FOLDER = os.path.join("cola_dlm", "cola_dit")
OFFICIAL_VAE_FOLDER = os.path.join("cola_dlm", "cola_vae")
OFFICIAL_TOKENIZER_FILE = "tokenizer.json"


def is_official_layout(folder: str) -> bool:
    """Whether `folder` holds the official release layout (`cola_dlm/cola_dit`, `cola_dlm/cola_vae`)."""
    return os.path.isdir(os.path.join(folder, "cola_dlm"))
