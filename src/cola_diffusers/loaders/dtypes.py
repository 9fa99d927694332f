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

"""The dtype names a checkpoint can be loaded in."""

import torch


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype):
    """A `torch.dtype` from a dtype or its name (see `DTYPES`); dicts by component are resolved entry by entry."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, dict):
        return {name: resolve_dtype(value) for name, value in dtype.items()}
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"`dtype` must be a torch.dtype or one of {list(DTYPES)}, got {dtype!r}.")


def component_dtype(dtype: torch.dtype | dict | None, name: str) -> torch.dtype | None:
    """The dtype of the component `name`: `dtype` itself, or its entry (else its `"default"`) when it is a dict."""
    if isinstance(dtype, dict):
        return dtype.get(name, dtype.get("default"))
    return dtype
