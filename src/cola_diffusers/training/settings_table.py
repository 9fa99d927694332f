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
