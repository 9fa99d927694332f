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


"""Checks of a diffusers-format checkpoint: its model configs and weight files before loading, its weights after."""

import inspect
import json
import logging
import os

import torch


logger = logging.getLogger(__name__)
# The weight files diffusers reads for a model, one of which each model folder holds.
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
)
JSON_TYPES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def check_model_config(model_class: type, values: dict, source: str):
    """
    Raises a `ValueError` naming `source` and the setting when a value of `values` is not of the JSON type of the
    default of `model_class`'s argument of that name (an integer passes as a number; null passes).
    """
    for name, parameter in inspect.signature(model_class.__init__).parameters.items():
        default, value = parameter.default, values.get(name)
        kind = type(default)
        if value is None or kind not in JSON_TYPES:
            continue
        accepted = (int, float) if kind is float else kind
        if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"{source}: `{name}` must be {JSON_TYPES[kind]}, got {json.dumps(value)}.")


def read_json(path: str):
    """The JSON value of the file `path`; a parse error names the file."""
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON: {error}.") from None


def check_pipeline_folder(folder: str, model_classes: dict[str, type]):
    """
    Raises before loading when a JSON file of the diffusers-format `folder` (its `model_index.json`, its components'
    configs and tokenizer files) does not parse, or a model of `model_classes` (by component name) has no weight file
    or a config setting of the wrong type.
    """
    components = [entry.path for entry in os.scandir(folder) if entry.is_dir()]
    for path in [os.path.join(folder, "model_index.json")] + [
        entry.path for component in components for entry in os.scandir(component) if entry.name.endswith(".json")
    ]:
        read_json(path)
    for name, model_class in model_classes.items():
        subfolder = os.path.join(folder, name)
        if not os.path.isfile(os.path.join(subfolder, "config.json")):
            continue
        if not any(os.path.isfile(os.path.join(subfolder, file)) for file in WEIGHT_FILES):
            raise FileNotFoundError(f"{subfolder} holds no weights: {WEIGHT_FILES[0]} is missing.")
        config_file = os.path.join(subfolder, "config.json")
        check_model_config(model_class, read_json(config_file), config_file)


def check_loaded_weights(components: dict, source: str):
    """
    Raises a `ValueError` for a model of `components` with weights its checkpoint `source` lacks (left on the meta
    device), and warns once for weights that are not finite.
    """
    for name, model in components.items():
        if not isinstance(model, torch.nn.Module):
            continue
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        missing = [key for key, tensor in tensors.items() if tensor.is_meta]
        if missing:
            raise ValueError(f"{source}: the {name} weights lack {missing[0]} ({len(missing)} tensor(s) missing).")
        not_finite = [
            key for key, tensor in tensors.items() if tensor.is_floating_point() and not tensor.isfinite().all()
        ]
        if not_finite:
            logger.warning(
                f"{source}: {len(not_finite)} {name} tensor(s), {not_finite[0]} first, hold NaN or infinite values; "
                "the model's output will not be meaningful."
            )
