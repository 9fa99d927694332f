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

"""The package's shape: modules of at most 400 lines, functions of at most 60 lines of code, short helper signatures."""

import ast
from pathlib import Path

from .conftest import REPO_ROOT


PACKAGE = REPO_ROOT / "src" / "cola_diffusers"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_POSITIONAL = 6
# Model forwards and pipeline calls take their arguments as diffusers' do; every other function is a helper.
ENTRY_POINTS = {"__init__", "__call__", "forward"}


def functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def code_lines(path: Path, node: ast.FunctionDef) -> int:
    """Lines of the body that are neither blank, comments, nor the docstring."""
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]
    lines = path.read_text().splitlines()[body[0].lineno - 1 : node.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_modules_and_functions_are_short():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE)
        if len(path.read_text().splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: more than {MAX_MODULE_LINES} lines")
        for node in functions(path):
            if code_lines(path, node) > MAX_FUNCTION_LINES:
                too_long.append(f"{name}:{node.lineno} {node.name}: more than {MAX_FUNCTION_LINES} lines of code")
            positional = [arg for arg in node.args.posonlyargs + node.args.args if arg.arg not in ("self", "cls")]
            if node.name not in ENTRY_POINTS and len(positional) > MAX_POSITIONAL:
                too_long.append(f"{name}:{node.lineno} {node.name}: {len(positional)} positional parameters")
    assert not too_long, "\n".join(too_long)
