"""Package attributes imported on first use, so that light modules load without torch."""

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """
    `__getattr__` and `__dir__` for `package`, whose public names are defined in the modules of `exports` (name →
    module relative to the package) and imported when first used.
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted([*vars(sys.modules[package]), *exports])

    return __getattr__, __dir__
