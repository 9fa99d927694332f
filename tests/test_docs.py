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

"""The documentation's code runs: every fenced ```python and ```bash block of README.md and docs/*.md is run offline,
unless it is on the explicit skip list below, so a renamed argument or a wrong path in a doc fails this test.

How a block runs:

- `SUBSTITUTIONS` (plain string replacements, in order) first turn what needs the network or a GPU into the local
  equivalent with the same meaning: the released 2B weights `ByteDance-Seed/Cola-DLM` become the tiny official-layout
  fixture `tests/fixtures/cola_reference`, `"cuda"` becomes `"cpu"`; dtypes are kept.
- Python blocks run in one subprocess (one import of torch and diffusers for all of them), each block in a fresh
  namespace, in a temporary folder holding `cola-dlm/`: the fixture converted by `cola-diffusers convert --dtype bf16`,
  the folder the docs' convert command writes. A block that continues the text around it (it uses `pipe` or
  `prompt` without defining them) gets the setup named in `CONTEXTS`; every other block must be self-contained.
  `EXPECTED_OUTPUT` checks what some blocks print.
- Bash blocks run with `bash -e` (and `pipefail`; every command line must succeed, `a && b` included), each in a
  fresh temporary folder with the repository's `benchmarks/`, `examples/` and `scripts/` scripts, `tests/` (for the
  fixtures) and `src/` (linked), and the inputs the README's commands name: `data/` (benchmark records),
  `prompts.txt` (two demo prompts) and a tiny `train.json` (with its `corpus.txt`). Their `cola-diffusers` runs are
  processes forked from one that has imported torch and diffusers once (`tests/cli_processes.py`). `SKIP_LINES`
  leaves single command lines out of a block that otherwise runs (a server among other commands).
- Every subprocess gets `HF_HUB_OFFLINE=1` and `OMP_NUM_THREADS=1`. Python and bash run two at a time.

`SKIPS` lists the blocks that cannot run here, each with its reason (GPUs, Hub downloads, servers that must keep
running, installs, long benchmarks), or that another test runs and checks, by a short substring unique to the block.
The test prints which blocks ran and which were skipped, and requires at least `MIN_BLOCKS_RUN` to have run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from .cli_processes import command_folder
from .conftest import run_script


REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "cola_reference"
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
MIN_BLOCKS_RUN = 18
# Guards against a hang, not speed checks: README's command-line block takes ~95 s alone and over 180 s on a busy
# 2-core machine.
PYTHON_TIMEOUT_S = 600
BASH_TIMEOUT_S = 600

# (text in a block, replacement, why): applied in this order to every block before it runs.
SUBSTITUTIONS = [
    ("ByteDance-Seed/Cola-DLM", str(FIXTURE), "the released 2B weights (a Hub download) -> the tiny official fixture"),
    ('"path/or/repo"', repr(str(FIXTURE)), "a placeholder path -> the fixture"),
    ("--model PATH", f"--model {FIXTURE}", "a placeholder path -> the fixture"),
    ('.to("cuda")', '.to("cpu")', "no GPU here"),
    (
        'uvicorn.run(app, host="127.0.0.1", port=8000)',
        'print("docs test: built", type(app).__name__, "without serving it")',
        "a server runs until stopped: check that the app builds, do not serve",
    ),
]

# (a substring unique to the block, why it is skipped).
SKIPS = [
    ("pip install", "installs packages: needs the network and changes the environment"),
    ("python -m pytest tests", "runs the whole test suite, this test included"),
    ("accelerate launch --num_processes 8", "8 GPUs"),
    ("accelerate launch --num_processes 2 examples", "2 GPUs (tests/pipelines/test_distributed.py runs its CPU form)"),
    (
        "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 examples",
        "tests/pipelines/test_distributed.py runs this command and checks its output against one pipeline call",
    ),
    ("--config_file fsdp.yaml", "FSDP: accelerate needs GPUs for it"),
    ("--configs release --device cuda", "a GPU, and the default benchmark runs for over 10 minutes on 2 cores"),
    (
        "--official-src ../shared",
        "the official source tree beside the checkout, and einops and rotary-embedding-torch",
    ),
    ('dataset_records("obqa"', "downloads OpenBookQA from the Hub"),
    ("--tasks gsm8k", "lm-eval downloads the gsm8k dataset from the Hub"),
    ('tasks=["gsm8k"]', "lm-eval downloads gsm8k from the Hub"),
    ("curl http://127.0.0.1:8000", "needs a running server (`cola-diffusers serve`)"),
    ("OpenAI(base_url=", "needs a running server (`cola-diffusers serve`)"),
]

# (a substring of a command line of a bash block that otherwise runs, why that line is left out).
SKIP_LINES = [
    ("cola-diffusers serve", "a server runs until stopped (tests/serving/ and tests/test_cli.py start one)"),
]

IMPORTS = "import torch\nfrom cola_diffusers import ColaDLMBlocks, ColaDLMPipeline\n"
PIPE = IMPORTS + textwrap.dedent(
    f"""\
    pipe = ColaDLMPipeline.from_pretrained({str(FIXTURE)!r})
    pipe.set_progress_bar_config(disable=True)
    prompt = "the river"
    conversation = [
        {{"role": "user", "content": "What is 2 + 3?"}},
        {{"role": "assistant", "content": "5"}},
        {{"role": "user", "content": "And 2 + 4?"}},
    ]
    """
)
MODULAR_PIPE = IMPORTS + 'pipe = ColaDLMBlocks().init_pipeline("cola-dlm")\npipe.load_components()\n'
# (a substring of a block that continues the text around it, the setup it runs after).
CONTEXTS = [
    ("pipe.guider = ClassifierFreeGuidance(", PIPE),
    ("def nudge(pipe,", PIPE),
    ("for chunk in pipe.stream(", PIPE),
    ("pipe(messages=conversation", PIPE),
    ("pipe = ColaDLMBlocks().init_pipeline()\n", IMPORTS),
    ("scheduler=FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=3.0),", MODULAR_PIPE),
    ("pipe.scheduler = scheduler\n", PIPE),
    ("out = pipe(prompt, sigmas=", PIPE),
]

# (a substring of a block, text its output must contain).
EXPECTED_OUTPUT = [
    ('print(pipe("1234>").texts[0])', "4321"),
    ("print(output.texts, output.finish_reasons, output.num_tokens)", "['4321', '8765'] ['stop', 'stop'] [5, 5]"),
]

# Created once in the Python blocks' folder, before any block runs.
PYTHON_SETUP = textwrap.dedent(
    f"""\
    from cola_diffusers.cli import main
    main(["convert", "--checkpoint_path", {str(FIXTURE)!r}, "--output_path", "cola-dlm", "--dtype", "bf16"])
    """
)

TRAIN_CONFIG = {
    "stage": "vae",
    "train_file": "corpus.txt",
    "output_dir": "runs/vae",
    "tokenizer_file": str(FIXTURE / "tokenizer.json"),
    "vae_config": {"latent_dim": 8, "hidden_size": 32, "num_attention_heads": 2, "ffn_dim": 64, "block_size": 4},
    # A new DiT is built at the release's size (1.3B parameters, 5.4 GB saved) unless the config says otherwise.
    "transformer_config": {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16, "rope_dim": 8},
    "max_length": 16,
    "block_sizes": [4],
    "batch_size": 4,
    "max_steps": 2,
}

# Runs the Python blocks: argv[1] is a JSON list of {"id", "setup", "code"}, argv[2] the JSON file of results.
PYTHON_DRIVER = textwrap.dedent(
    """\
    import contextlib, io, json, sys, time, traceback

    with open(sys.argv[1]) as file:
        spec = json.load(file)
    exec(compile(spec["setup"], "<docs test setup>", "exec"), {"__name__": "__docs_setup__"})
    results = {}
    for block in spec["blocks"]:
        print(f"docs test: running {block['id']}", file=sys.stderr, flush=True)
        start, stdout, error = time.perf_counter(), io.StringIO(), None
        namespace = {"__name__": "__main__"}
        try:
            with contextlib.redirect_stdout(stdout):
                exec(compile(block["setup"], f"<setup of {block['id']}>", "exec"), namespace)
                exec(compile(block["code"], block["id"], "exec"), namespace)
        except BaseException:
            error = traceback.format_exc()
        results[block["id"]] = {"error": error, "stdout": stdout.getvalue(), "seconds": time.perf_counter() - start}
        with open(sys.argv[2], "w") as file:
            json.dump(results, file)
    """
)


@dataclass
class Block:
    path: str
    line: int
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Result:
    block: Block
    status: str  # "passed", "failed" or "skipped"
    detail: str = ""
    seconds: float = 0.0


def extract_blocks(path: Path, root: Path = REPO) -> list[Block]:
    """The fenced python and bash blocks of a markdown file, with the line of their opening fence."""
    text = path.read_text(encoding="utf-8")
    name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    blocks = []
    for match in re.finditer(r"^( *)```(\w*)[^\n]*\n(.*?)^ *```[ \t]*$", text, re.DOTALL | re.MULTILINE):
        language = LANGUAGES.get(match.group(2).lower())
        if language:
            code = textwrap.dedent(match.group(3))
            blocks.append(Block(name, text.count("\n", 0, match.start()) + 1, language, code))
    return blocks


def first_match(table, code: str):
    return next((value for key, value in table if key in code), None)


def substitute(code: str) -> str:
    for old, new, _ in SUBSTITUTIONS:
        code = code.replace(old, new)
    return code


def subprocess_env() -> dict:
    """
    Offline (`HF_HUB_OFFLINE` covers transformers and datasets too), one thread, this venv's commands first. The other
    tests' command-line runs set the same import-time variables, so they share one forking process.
    """
    bin_dir = os.path.dirname(sys.executable)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),  # cola-diffusers, accelerate, python of this venv
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def bash_script(code: str) -> tuple[str, list[str]]:
    """The script to run and the notes on the lines of `SKIP_LINES` it leaves out.

    `set -e` does not stop at a failing `a` of `a && b`: every command line is grouped so that its failure exits.
    """
    logical_lines, current = [], ""
    for line in code.splitlines():
        current += line + "\n"
        if not line.endswith("\\"):
            logical_lines.append(current)
            current = ""
    if current:
        logical_lines.append(current)
    script, notes = [], []
    for line in logical_lines:
        reason = first_match(SKIP_LINES, line)
        if reason:
            notes.append(f"skipped line `{line.strip()[:60]}`: {reason}")
        elif line.strip() and not line.lstrip().startswith("#"):
            script.append(f"{{ {line}}} || exit $?\n")
    return "set -eo pipefail\nset -x\n" + "".join(script), notes


def make_bash_folder(parent: Path) -> Path:
    """A stand-in for the repository root: copies of the script folders (they may write there), links to the rest."""
    folder = Path(tempfile.mkdtemp(prefix="bash-", dir=parent))
    for scripts in ("benchmarks", "examples", "scripts"):
        shutil.copytree(REPO / scripts, folder / scripts, ignore=shutil.ignore_patterns("results", "__pycache__"))
    for name in ("src", "tests", "pyproject.toml"):
        (folder / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "tests" / "fixtures" / "benchmark_inputs", folder / "data")
    (folder / "train.json").write_text(json.dumps(TRAIN_CONFIG))
    (folder / "prompts.txt").write_text("1234>\n5678>\n")
    (folder / "corpus.txt").write_text("".join(f"the river and the mountain, a long day {i}\n" for i in range(32)))
    return folder


def run_bash(block: Block, parent: Path) -> Result:
    folder = make_bash_folder(parent)
    script, notes = bash_script(substitute(block.code))
    env = subprocess_env()
    (folder / "bin").mkdir()
    env["PATH"] = command_folder(folder / "bin", env) + os.pathsep + env["PATH"]
    start = time.perf_counter()
    try:
        process = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=folder,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=BASH_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        return Result(block, "failed", f"timed out after {BASH_TIMEOUT_S} s\n{tail(str(error.stderr or ''))}")
    seconds = time.perf_counter() - start
    if process.returncode:
        output = tail(process.stdout + process.stderr)
        return Result(block, "failed", "\n".join([*notes, f"exit {process.returncode}", output]), seconds)
    return check_output(Result(block, "passed", "\n".join(notes), seconds), process.stdout)


def run_python(blocks: list[Block], parent: Path) -> list[Result]:
    if not blocks:
        return []
    folder = Path(tempfile.mkdtemp(prefix="python-", dir=parent))
    spec = {
        "setup": PYTHON_SETUP,
        "blocks": [
            {"id": block.id, "setup": first_match(CONTEXTS, block.code) or "", "code": substitute(block.code)}
            for block in blocks
        ],
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    results_file = folder / "results.json"
    stderr = ""
    try:
        process = subprocess.run(
            [sys.executable, "-c", PYTHON_DRIVER, "spec.json", str(results_file)],
            cwd=folder,
            env=subprocess_env(),
            check=False,
            capture_output=True,
            text=True,
            timeout=PYTHON_TIMEOUT_S,
        )
        stderr = process.stderr
    except subprocess.TimeoutExpired as error:
        stderr = f"timed out after {PYTHON_TIMEOUT_S} s\n" + str(error.stderr or "")
    outcomes = json.loads(results_file.read_text()) if results_file.exists() else {}
    results = []
    for block in blocks:
        outcome = outcomes.get(block.id)
        if outcome is None:  # the setup failed, or the process died or timed out before or in this block
            results.append(Result(block, "failed", f"did not finish:\n{tail(stderr)}"))
        elif outcome["error"]:
            results.append(Result(block, "failed", tail(outcome["error"]), outcome["seconds"]))
        else:
            results.append(check_output(Result(block, "passed", "", outcome["seconds"]), outcome["stdout"]))
    return results


def check_output(result: Result, stdout: str) -> Result:
    expected = first_match(EXPECTED_OUTPUT, result.block.code)
    if expected is not None and expected not in stdout:
        return Result(
            result.block, "failed", f"expected {expected!r} in the output, got:\n{tail(stdout)}", result.seconds
        )
    return result


def run_blocks(blocks: list[Block], parent: Path) -> list[Result]:
    """Runs every block that is not skipped; the results are in the order of `blocks`."""
    results, python, bash = {}, [], []
    for block in blocks:
        reason = first_match(SKIPS, block.code)
        if reason:
            results[block.id] = Result(block, "skipped", reason)
        else:
            (python if block.language == "python" else bash).append(block)
    with ThreadPoolExecutor(max_workers=2) as pool:
        python_results = pool.submit(run_python, python, parent)
        bash_results = list(pool.map(lambda block: run_bash(block, parent), bash))
        for result in python_results.result() + bash_results:
            results[result.block.id] = result
    return [results[block.id] for block in blocks]


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def report(results: list[Result]) -> str:
    lines = []
    for result in results:
        first_line = next((line for line in result.block.code.splitlines() if line.strip()), "")[:70]
        timing = f" ({result.seconds:.1f} s)" if result.status != "skipped" else ""
        lines.append(f"{result.status:7} {result.block.id:28} [{result.block.language}] {first_line}{timing}")
        if result.status == "skipped":
            lines.append(f"        reason: {result.detail}")
        elif result.detail:
            lines.append(textwrap.indent(result.detail, "        | "))
    counts = {status: sum(result.status == status for result in results) for status in ("passed", "failed", "skipped")}
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items()))
    return "\n".join(lines)


def synthetic_markdown(folder: Path) -> Path:
    """A doc holding a real snippet of docs/pipeline.md, the same snippet with a renamed keyword, a bash command with
    a renamed option, a block to skip, a block with a line to skip and a block of another language."""
    snippet = next(
        block.code for block in extract_blocks(REPO / "docs" / "pipeline.md") if "gen_length=" in block.code
    )
    markdown = folder / "synthetic.md"
    markdown.write_text(
        "# A doc\n\n"
        f"```python\n{snippet}```\n\n"
        "The same call with a renamed keyword:\n\n"
        f"```python\n{snippet.replace('gen_length=', 'gen_len=')}```\n\n"
        '```bash\ncola-diffusers generate "1234>" --num-steps 2 && echo not reached\necho reached\n```\n\n'
        "```bash\npip install nothing-at-all\n```\n\n"
        "```bash\ncola-diffusers serve --port 1 &\necho the rest runs\n```\n\n"
        '```json\n{"not": "run"}\n```\n',
        encoding="utf-8",
    )
    return markdown


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run of every doc block and of the synthetic doc's blocks (sharing the subprocesses saves time)."""
    folder = tmp_path_factory.mktemp("docs")
    docs = [block for path in doc_files() for block in extract_blocks(path)]
    synthetic = extract_blocks(synthetic_markdown(folder), root=folder)
    start = time.perf_counter()
    results = run_blocks(docs + synthetic, folder)
    print(f"\nran the doc blocks in {time.perf_counter() - start:.1f} s")
    return docs, results[: len(docs)], results[len(docs) :]


@pytest.mark.slow
def test_documented_code_runs(runs):
    blocks, results, _ = runs
    summary = report(results)
    print("\n" + summary)
    unused = [key for key, _ in SKIPS if not any(key in block.code for block in blocks)]
    if unused:
        print(f"skip entries that match no block (stale?): {unused}")
    failed = [result for result in results if result.status == "failed"]
    ran = [result for result in results if result.status != "skipped"]
    assert not failed, f"{len(failed)} documented block(s) failed:\n{summary}"
    assert len(ran) >= MIN_BLOCKS_RUN, f"only {len(ran)} blocks ran (at least {MIN_BLOCKS_RUN} expected):\n{summary}"


@pytest.mark.slow
def test_runner_fails_on_a_renamed_argument(runs):
    """The runner reports a documented call whose keyword or option no longer exists, and skips what it should."""
    _, _, results = runs
    print("\n" + report(results))
    assert [result.block.language for result in results] == ["python", "python", "bash", "bash", "bash"]  # no json
    assert [result.status for result in results] == ["passed", "failed", "failed", "skipped", "passed"]
    assert "skipped line `cola-diffusers serve --port 1 &`" in results[4].detail
    assert "unexpected keyword argument 'gen_len'" in results[1].detail
    # `a && b` stops the block at a failing `a`: the next line does not run.
    assert "unrecognized arguments: --num-steps" in results[2].detail and "reached" not in results[2].detail


def test_conversion_script_refuses_a_folder_that_is_not_empty(tmp_path, monkeypatch, capsys):
    """`scripts/convert_cola_dlm_to_diffusers.py` (in the docs beside `cola-diffusers convert`) keeps what is there."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    arguments = ["--checkpoint_path", FIXTURE, "--output_path", tmp_path / "out"]
    assert run_script("convert_cola_dlm_to_diffusers.py", arguments, monkeypatch) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "out")) == ["keep.txt"]
