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
