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

"""
The settings reference of docs/training.md, generated from the `TrainingConfig` fields:

    python -m cola_diffusers.training.settings_table
"""

import dataclasses
import json

from .config import TrainingConfig


def settings_table() -> str:
    """The Markdown table of every `TrainingConfig` setting: name, JSON default (or "required") and meaning."""
    rows = ["| Setting | Default | Meaning |", "| --- | --- | --- |"]
    for field in dataclasses.fields(TrainingConfig):
        if "help" not in field.metadata:
            raise ValueError(f"`TrainingConfig.{field.name}` has no `help`; declare it with `setting(help, ...)`.")
        if field.default is not dataclasses.MISSING:
            default = f"`{json.dumps(field.default)}`"
        elif field.default_factory is not dataclasses.MISSING:
            default = f"`{json.dumps(field.default_factory())}`"
        else:
            default = "required"
        meaning = field.metadata["help"].replace("|", "\\|")
        rows.append(f"| `{field.name}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
