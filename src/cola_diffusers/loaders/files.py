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


"""Writing a checkpoint's files: a failed write (a full or read-only disk) becomes one error that names the path."""

import contextlib
import errno
import os
import re
import shutil

from safetensors import SafetensorError


# What torch's and safetensors' writers say when a file cannot be written (they raise no `OSError`).
WRITE_FAILURES = ("PytorchStreamWriter", "inline_container", "file write failed", "IoError")


def write_failure(error: Exception, path: str) -> str:
    """Why writing under `path` failed, in a few words: the system's reason, else the disk's state."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    code = re.search(r"os error (\d+)", str(error))  # safetensors' I/O errors
    if code:
        return os.strerror(int(code[1]))
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free == 0:
            return os.strerror(errno.ENOSPC)
    return " ".join(str(error).split())[:200]


@contextlib.contextmanager
def reported_write_errors(path: str, remove: str | None = None):
    """
    Runs a write under `path`; a failure becomes an `OSError` that names `path` and why, after removing what was half
    written in `remove`.
    """
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        if isinstance(error, RuntimeError) and not any(marker in str(error) for marker in WRITE_FAILURES):
            raise
        reason = write_failure(error, path)
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True)
        raise OSError(f"Cannot write {path}: {reason}.") from error
