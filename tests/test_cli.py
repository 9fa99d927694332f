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

"""The `cola-diffusers` command: fast help, one-line errors, the flags users reach for, serve as the adapter."""

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
import torch
from safetensors.torch import load_file

from cola_diffusers.cli import main

from .cli_processes import run_cli
from .conftest import (
    ADAPTER_EXAMPLE,
    FIXTURE_DIR,
    free_port,
    make_chat_pipeline,
    make_tiny_pipeline,
    save_distilled_checkpoint,
    wait_until_serving,
)


COMMAND = [sys.executable, "-m", "cola_diffusers.cli"]
ENVIRONMENT = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*arguments, env=None, cwd=None):
    return run_cli(arguments, env={**ENVIRONMENT, **(env or {})}, cwd=cwd)


def test_help_and_argument_errors_import_no_heavy_module():
    code = (
        "import sys\nfrom cola_diffusers.cli import build_parser\n"
        "for argv in (['--help'], ['generate', '--help'], ['generate', '--steps', '0', 'x']):\n"
        "    try:\n        build_parser().parse_args(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(name for name in ('torch', 'diffusers', 'transformers') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_input_errors_are_found_before_torch_is_imported(tmp_path):
    # A bad prompt file, a training config naming a missing corpus and an eval run to resume that is not there: each
    # answers before torch, diffusers or transformers load (the error tests of `tests/test_cli_errors.py` rely on it).
    (tmp_path / "prompts.jsonl").write_text('{"prompt": 123}\n')
    config = {"stage": "vae", "train_file": "missing.txt", "output_dir": "out", "tokenizer_file": "tokenizer.json"}
    (tmp_path / "train.json").write_text(json.dumps(config))
    cases = [
        ["generate", "--prompt-file", "prompts.jsonl"],
        ["train", "--config", "train.json"],
        ["eval", "run", "--tasks", "reverse_digits", "--output", str(tmp_path), "--resume"],
    ]
    code = (
        "import sys\nfrom cola_diffusers.cli import main\n"
        f"for argv in {cases!r}:\n"
        "    try:\n        main(argv)\n    except SystemExit as exit:\n        print(exit.code)\n"
        "print(sorted(name for name in ('torch', 'diffusers', 'transformers') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.stdout.split("\n")[:4] == ["2", "2", "2", "[]"], result.stdout + result.stderr
    errors = result.stderr.strip().splitlines()
    assert "a JSON line needs a 'prompt' string" in errors[0] and "`train_file` `missing.txt`" in errors[1]
    assert "--resume:" in errors[2] and len(errors) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "arguments,message",
    [
        (["generate", "x", "--model", "./nope"], "'./nope' is neither a checkpoint folder, a Hub repo id"),
        (
            ["generate", "x", "--model", "ByteDance-Seed/Cola-DLM"],
            "ByteDance-Seed/Cola-DLM is not in the local Hub cache and HF_HUB_OFFLINE is set: pass a local folder",
        ),
        (["generate", ""], "Prompt 0 is empty"),
        (["generate"], "Give a prompt, several prompts, or --prompt-file"),
        (["generate", "a", "b", "--stream"], "--stream prints one prompt's text"),
        (["generate", "--prompt-file", "missing.txt"], "--prompt-file missing.txt does not exist"),
        (["generate", "x", "--top-p", "1.5"], "--top-p: must be in \\(0, 1\\], got 1.5"),
        (["train", "--config", "missing.json"], "missing.json"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(arguments, message):
    result = run(*arguments)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.search(message, last), last


@pytest.mark.slow
def test_debug_shows_the_traceback():
    result = run("--debug", "generate", "")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_generate_flags(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "5678>"}\n90>\n')
    main(["generate", "1234>", "--prompt-file", str(prompts), "--output", "json", "--gen-length", "8"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["prompt"] for line in lines] == ["1234>", "5678>", "90>"]
    assert lines[0] == {"prompt": "1234>", "text": "4321", "token_ids": [7, 6, 5, 4, 0], "finish_reason": "stop"}
    assert lines[1]["text"] == "8765"
    # Sampling flags reach the pipeline: greedy and sampled outputs differ, and the same seed repeats.
    sampled = ["generate", "1234>", "--temperature", "5", "--top-k", "8", "--top-p", "0.9", "--seed", "3"]
    main(sampled)
    first = capsys.readouterr().out
    main(sampled)
    assert capsys.readouterr().out == first and first.strip() != "4321"
    main(["generate", "1234>", "--scheduler", "unipc", "--steps", "8", "--block-length", "4", "--chat"])
    assert capsys.readouterr().out.strip() == "4321"


def test_generate_samples_with_the_sampling_defaults_of_the_checkpoint(tmp_path, capsys):
    pipe = make_tiny_pipeline(seed=3)
    folder = save_distilled_checkpoint(pipe, tmp_path / "student")

    def pipeline_text(**kwargs):
        generator = [torch.Generator().manual_seed(0)]
        return pipe(["the river"], gen_length=8, generator=generator, **kwargs).texts[0]

    def cli_text(*flags):
        main(["generate", "the river", "--model", folder, "--gen-length", "8", "--output", "json", *flags])
        return json.loads(capsys.readouterr().out)["text"]

    distilled, full = pipeline_text(num_inference_steps=1, guidance_scale=1.0), pipeline_text()
    assert distilled != full
    assert cli_text() == distilled
    assert cli_text("--steps", "16", "--guidance", "7") == full


@pytest.mark.slow
def test_generate_loads_bfloat16_weights(tmp_path):
    result = run(
        "generate",
        "the river",
        "--model",
        FIXTURE_DIR,
        "--dtype",
        "bfloat16",
        "--gen-length",
        "4",
        "--steps",
        "2",
        "--output",
        "json",
        env={"COLA_DIFFUSERS_DEBUG": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["token_ids"]) >= 1
    from cola_diffusers.cli import build_parser, load_pipeline

    pipe = load_pipeline(build_parser().parse_args(["generate", "x", "--model", FIXTURE_DIR, "--dtype", "bfloat16"]))
    assert (pipe.transformer.dtype, pipe.vae.dtype) == (torch.bfloat16, torch.bfloat16)


@pytest.mark.slow
def test_convert_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = run("convert", "--checkpoint-path", FIXTURE_DIR, "--output-path", str(tmp_path / "out"))
    assert result.returncode == 2 and "is not empty; pass --overwrite" in result.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    # The underscore spelling still works.
    converted = run(
        "convert", "--checkpoint_path", FIXTURE_DIR, "--output_path", str(tmp_path / "new"), "--dtype", "bf16"
    )
    assert converted.returncode == 0, converted.stderr
    weights = load_file(tmp_path / "new" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {str(tensor.dtype) for key, tensor in weights.items() if "inv_freq" not in key} == {"torch.bfloat16"}


@pytest.mark.slow
def test_serve_answers_the_official_adapter_example():
    port = free_port()
    server = subprocess.Popen(
        [
            *COMMAND,
            "serve",
            "--model",
            FIXTURE_DIR,
            "--served-model-name",
            "cola-dlm",
            "--port",
            str(port),
            "--api-key",
            "change-me",
        ],
        env=ENVIRONMENT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_serving(server, f"http://127.0.0.1:{port}")
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=ADAPTER_EXAMPLE,
            timeout=120,
            headers={"Authorization": "Bearer change-me"},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model"] == "cola-dlm" and answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["usage"]["completion_tokens"] > 0

        # A second server on the same port says so before loading any model.
        started = time.monotonic()
        taken = run("serve", "--model", FIXTURE_DIR, "--port", str(port))
        assert taken.returncode == 2 and f"Cannot listen on 127.0.0.1:{port}" in taken.stderr
        assert "Loading" not in taken.stderr and time.monotonic() - started < 30
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_takes_the_official_environment_variables():
    from cola_diffusers.cli import build_parser

    environment = {
        "COLA_MODEL_NAME": "cola-dlm",
        "COLA_API_KEY": "k",
        "COLA_MAX_NEW_TOKENS_LIMIT": "99",
        "COLA_DEFAULT_MAX_NEW_TOKENS": "7",
        "COLA_DEVICE": "cpu",
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        args = build_parser().parse_args(["serve"])
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    assert (args.served_model_name, args.api_key, args.max_tokens_limit, args.default_max_tokens, args.device) == (
        "cola-dlm",
        "k",
        99,
        7,
        "cpu",
    )


def test_generate_json_with_a_chat_format_reports_the_pipelines_stop(tmp_path, capsys):
    # A tiny chat model whose decoder leans towards ■, a single token here and the `text` format's stop token.
    pipe = make_chat_pipeline(extra_tokens=["■"])
    stop_token_id = pipe.tokenizer.convert_tokens_to_ids("■")
    with torch.no_grad():
        pipe.vae.decoder.lm_head.bias[stop_token_id] += 1.0
    pipe.save_pretrained(tmp_path / "chat")
    messages = [{"role": "user", "content": "the river"}]
    expected = pipe(messages=messages, chat_format="text", gen_length=16, generator=[torch.Generator().manual_seed(0)])
    assert expected.finish_reasons == ["stop"] and 1 < expected.num_tokens[0] < 16

    main(["generate", "the river", "--model", str(tmp_path / "chat"), "--chat-format", "text", "--output", "json"])
    line = json.loads(capsys.readouterr().out)
    token_ids = expected.sequences[0, : expected.num_tokens[0]].tolist()
    assert token_ids[-1] == stop_token_id
    assert line == {"prompt": "the river", "text": expected.texts[0], "token_ids": token_ids, "finish_reason": "stop"}


def test_every_subcommand_takes_the_same_dtype_spellings():
    from cola_diffusers.cli import build_parser

    parser = build_parser()
    convert = ["convert", "--checkpoint-path", FIXTURE_DIR, "--output-path", "out"]
    for spelling, name in [("bf16", "bfloat16"), ("bfloat16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32")]:
        assert parser.parse_args(["generate", "1234>", "--dtype", spelling]).dtype == name
        assert parser.parse_args([*convert, "--dtype", spelling]).dtype == name
        assert parser.parse_args(["serve", "--dtype", spelling]).dtype == name
    assert parser.parse_args(convert).dtype == "float32"


def test_generate_and_eval_default_to_the_pipelines_gen_length():
    from cola_diffusers.cli import build_parser
    from cola_diffusers.generation.inputs import DEFAULTS

    parser = build_parser()
    assert parser.parse_args(["generate", "1234>"]).gen_length == DEFAULTS.gen_length
    assert (
        parser.parse_args(["eval", "run", "--tasks", "reverse_digits", "--output", "out"]).gen_length
        == DEFAULTS.gen_length
    )


@pytest.mark.slow
def test_demo_names_the_demo_model_beside_a_folder_of_that_name(tmp_path):
    # What `eval run --output demo` leaves behind: a folder named `demo` that holds no model.
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "run_config.json").write_text("{}")
    result = run("generate", "1234>", "--model", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4321"
    assert "'demo' is the embedded demo model; ./demo holds no model" in result.stderr
    defaulted = run("generate", "1234>", cwd=tmp_path)
    assert defaulted.returncode == 0 and defaulted.stdout.strip() == "4321"


def test_help_names_defaults_without_paths():
    from cola_diffusers.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("generate", "serve"):
        text = commands[name].format_help()
        assert "(default: demo)" in text and "reverse_digits" not in text
        # Only defaults there are, once: none for unset options and flags, none where the help states its own.
        assert "(default: None)" not in text and "(default: False)" not in text
        assert "else 16. (default" not in " ".join(text.split())
    assert "The port to listen on." in commands["serve"].format_help()


def test_debug_and_verbose_are_taken_after_the_subcommand_too():
    from cola_diffusers.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["generate", "x", "--debug"]).debug
    assert parser.parse_args(["--debug", "generate", "x"]).debug
    assert parser.parse_args(["eval", "score", "out", "--verbose"]).verbose
    assert not parser.parse_args(["generate", "x"]).debug


@pytest.mark.slow
def test_generate_streams_json_lines_one_per_block():
    result = run("generate", "1234>", "--output", "json", "--stream", "--gen-length", "8")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["block"] for line in lines] == [0, 1]
    assert "".join(line["text"] for line in lines) == "4321" and lines[-1]["finished"]


@pytest.mark.slow
def test_generate_is_quiet_unless_verbose():
    quiet = run("generate", "1234>", "--scheduler", "unipc", "--steps", "8")
    assert quiet.returncode == 0 and quiet.stdout == "4321\n" and quiet.stderr == "", quiet.stderr
    verbose = run("generate", "1234>", "--scheduler", "unipc", "--steps", "8", "--verbose")
    assert verbose.stdout == "4321\n" and "Loading pipeline components" in verbose.stderr


@pytest.mark.slow
def test_settings_the_model_was_not_trained_with_and_unknown_characters_warn():
    result = run("generate", "abc>", "--block-length", "2", "--max-model-len", "200", "--gen-length", "8")
    assert result.returncode == 0, result.stderr
    assert "--block-length 2 differs from the block size the model was trained with (4)" in result.stderr
    assert "--max-model-len 200 is beyond the 128 tokens the model was trained on" in result.stderr
    assert "prompt 0 holds characters the tokenizer does not know; they are read as <|pad|>" in result.stderr


@pytest.mark.slow
def test_an_unreachable_hub_fails_within_seconds_without_retries():
    environment = {name: value for name, value in ENVIRONMENT.items() if name != "HF_HUB_OFFLINE"}
    environment["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = run_cli(["generate", "1>", "--model", "owner/name"], env=environment)
    assert result.returncode == 2 and "Retrying" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "Cannot reach the Hub for owner/name, and it is not in the local cache" in line
    assert "HF_HUB_OFFLINE" not in line and time.monotonic() - started < 25
