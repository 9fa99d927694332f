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
