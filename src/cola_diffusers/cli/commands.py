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

"""What each sub-command does; each imports torch, diffusers and the rest of what it needs when it runs."""

import contextlib
import json
import os
import re
import socket
import sys


# The flag of each pipeline argument, so that an error names what the user typed.
FLAGS = {
    "gen_length": "--gen-length",
    "max_sequence_length": "--max-model-len",
    "block_length": "--block-length",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "chat_format": "--chat-format",
}


@contextlib.contextmanager
def flag_errors():
    """Re-raises a pipeline's `ValueError` with its argument names replaced by the flags that set them."""
    from ..generation.inputs import PromptTooLongError

    try:
        yield
    except ValueError as error:
        message = re.sub(r"`(\w+)`", lambda match: FLAGS.get(match[1], match[0]), str(error))
        if isinstance(error, PromptTooLongError):
            message += " Lower --gen-length, shorten the prompt, or raise --max-model-len."
        raise ValueError(message) from error


def quiet_libraries(verbose: bool):
    """Silences the loading bars and library warnings of diffusers and transformers, unless `verbose`."""
    if verbose:
        return
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def check_device(device: str):
    """Raises a `ValueError` naming `--device` when this machine's torch cannot place a tensor on `device`."""
    import torch

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        available = "cpu" + (", cuda" if torch.cuda.is_available() else "")
        reason = " ".join(str(error).split())[:120]
        raise ValueError(f"--device {device} is not available here ({reason}); available: {available}.") from None


def load_pipeline(args, default_device=None):
    """
    The pipeline of `--model` in `--dtype` on `--device` (default: `default_device`, else CUDA where there is one,
    else the CPU).
    """
    import torch

    # A device this machine lacks is named before diffusers and the pipeline are imported.
    if args.device is not None:
        check_device(args.device)

    from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline

    quiet_libraries(args.verbose)
    dtype = None if args.dtype == "auto" else args.dtype
    pipe = ColaDLMPipeline.from_pretrained(args.model, dtype=dtype)
    device = args.device or default_device or ("cuda" if torch.cuda.is_available() else "cpu")
    return pipe.to(device)


def read_prompt_line(path: str, number: int, line: str) -> str:
    """The prompt of a line of `--prompt-file`: the line itself, or the "prompt" string of a JSON object."""
    if not line.lstrip().startswith("{"):
        return line
    where = f"--prompt-file {path}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}, is not valid JSON: {error.msg} (column {error.colno}).") from None
    if not isinstance(record.get("prompt"), str):
        got = "none" if "prompt" not in record else type(record["prompt"]).__name__
        raise ValueError(f"{where}: a JSON line needs a 'prompt' string, got {got}.")
    return record["prompt"]


def read_prompt_file(path: str) -> list[str]:
    """The prompts of a file: a line each, or JSONL records with a "prompt"."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"--prompt-file {path} is a folder; pass a file of prompts, one per line or JSONL.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompt-file {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as file:
            lines = [line.rstrip("\n") for line in file]
    except UnicodeDecodeError as error:
        raise ValueError(f"--prompt-file {path} is not UTF-8 text (byte {error.start}).") from None
    return [read_prompt_line(path, number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def read_prompts(args) -> list[str]:
    """The positional prompts, then those of `--prompt-file` (a line each, or JSONL records with a "prompt")."""
    prompts = list(args.prompt)
    if args.prompt_file:
        prompts.extend(read_prompt_file(args.prompt_file))
    if not prompts:
        raise ValueError("Give a prompt, several prompts, or --prompt-file.")
    empty = [index for index, prompt in enumerate(prompts) if not prompt.strip()]
    if empty:
        raise ValueError(f"Prompt {empty[0]} is empty; every prompt needs at least one token.")
    if args.stream and len(prompts) > 1:
        raise ValueError(f"--stream prints one prompt's text as it comes; got {len(prompts)} prompts.")
    return prompts


def request_kwargs(args, prompts: list[str]) -> dict:
    """The request of `generate`: its prompts (or chats, with `--chat`) and sampling options."""
    kwargs = {
        "gen_length": args.gen_length,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "block_length": args.block_length,
        "max_sequence_length": args.max_model_len,
    }
    if args.chat or args.chat_format:
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        kwargs.update(messages=conversations, chat_format=args.chat_format)
    else:
        kwargs["prompt"] = prompts
    return kwargs


def warn(message: str):
    print(f"warning: {message}", file=sys.stderr)


def warn_of_untrained_settings(pipe, args):
    """Warns of a `--block-length` or `--max-model-len` the model was not trained with."""
    block_size = pipe.transformer.config.block_size
    if getattr(args, "block_length", None) not in (None, block_size):
        warn(
            f"--block-length {args.block_length} differs from the block size the model was trained with ({block_size})."
        )
    trained_length = pipe.tokenizer.model_max_length
    if args.max_model_len is not None and args.max_model_len > trained_length:
        warn(f"--max-model-len {args.max_model_len} is beyond the {trained_length} tokens the model was trained on.")


def warn_of_unknown_characters(pipe, prompts: list[str], request):
    """Warns once when a prompt holds characters the tokenizer does not know (they become its unknown token)."""
    unknown = getattr(pipe.tokenizer.backend_tokenizer.model, "unk_token", None)
    unknown_id = pipe.tokenizer.convert_tokens_to_ids(unknown) if unknown else None
    for index, (prompt, ids) in enumerate(zip(prompts, request.prompt_token_ids)):
        if unknown_id is not None and unknown_id in ids and unknown not in prompt:
            warn(f"prompt {index} holds characters the tokenizer does not know; they are read as {unknown}.")
            return


def print_json_lines(prompts: list[str], output):
    """A JSON line per prompt: its text, the completion's token ids and why it finished."""
    rows = zip(prompts, output.texts, output.sequences.tolist(), output.finish_reasons, output.num_tokens)
    for prompt, text, ids, finish_reason, num_tokens in rows:
        result = {"prompt": prompt, "text": text, "token_ids": ids[:num_tokens], "finish_reason": finish_reason}
        print(json.dumps(result, ensure_ascii=False))


def print_stream(chunks, output: str):
    """The text of each decoded block as it comes; with `--output json`, a JSON line per block."""
    for chunk in chunks:
        if chunk.is_preview:
            continue
        if output == "json":
            block = {"block": chunk.block_index, "text": chunk.texts[0], "token_ids": chunk.token_ids[0]}
            print(json.dumps({**block, "finished": chunk.finished[0]}, ensure_ascii=False), flush=True)
        else:
            print(chunk.texts[0], end="", flush=True)
    if output == "text":
        print()


def generate(args):
    # The prompts are read, and a bad prompt file refused, before torch is imported.
    prompts = read_prompts(args)

    import torch

    from ..schedulers import scheduler_from_name

    pipe = load_pipeline(args)
    pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    # The blocks' bar with --verbose, on stderr; never inside streamed text or JSON.
    quiet = not args.verbose or args.stream or args.output == "json"
    pipe.set_progress_bar_config(disable=quiet, leave=False, desc="blocks", delay=1)
    warn_of_untrained_settings(pipe, args)
    with flag_errors():
        request = pipe.make_request(**request_kwargs(args, prompts))
    warn_of_unknown_characters(pipe, prompts, request)
    generator = [torch.Generator().manual_seed(args.seed + index) for index in range(len(prompts))]
    if args.stream:
        print_stream(pipe.stream(request=request, generator=generator), args.output)
        return
    output = pipe(request=request, generator=generator)
    if args.output == "json":
        print_json_lines(prompts, output)
    else:
        for text in output.texts:
            print(text)


def check_port(host: str, port: int):
    """Raises an `OSError` naming `--port` when `host:port` is taken, so that it is found before the model loads."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(f"Cannot listen on {host}:{port} ({error.strerror}); pick another --port.") from None


def load_served_pipeline(args):
    """The pipeline `serve` serves, with a warning of settings the model was not trained with."""
    pipe = load_pipeline(args)
    warn_of_untrained_settings(pipe, args)
    return pipe


def served_model_name(args) -> str:
    """The id clients pass as `model`: `--served-model-name`, else the folder name or repo id of `--model`."""
    if args.served_model_name is None and os.path.isdir(args.model):
        return os.path.basename(os.path.normpath(args.model))
    return args.served_model_name or args.model


def app_options(args) -> dict:
    """The keyword arguments of `create_app` that `serve`'s flags set."""
    return {
        "api_key": args.api_key,
        "max_tokens_limit": args.max_tokens_limit,
        "default_max_tokens": args.default_max_tokens,
        "max_queue": args.max_queue,
        "max_batch_size": args.max_batch_size,
        "max_rows_per_request": args.max_rows_per_request,
        "max_model_len": args.max_model_len,
        "max_request_bytes": args.max_request_bytes,
        "body_timeout": args.body_timeout,
        "chat_format": args.chat_format,
        "seed": args.seed,
        "allowed_origins": args.allowed_origins,
        "enable_docs": not args.disable_fastapi_docs,
    }


def serve(args):
    if args.replicas is not None:
        from .replicas import serve_on_ray

        serve_on_ray(args)
        return
    check_port(args.host, args.port)

    from ..serving import create_app, serve_app

    app = create_app(load_served_pipeline(args), served_model_name(args), **app_options(args))
    serve_app(
        app,
        args.host,
        args.port,
        timeout_keep_alive=args.timeout_keep_alive,
        limit_concurrency=args.limit_concurrency,
    )


def convert(args):
    if os.path.isdir(args.output_path) and os.listdir(args.output_path) and not args.overwrite:
        raise ValueError(f"--output-path {args.output_path} is not empty; pass --overwrite to replace what is there.")

    from ..loaders.files import reported_write_errors
    from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline

    quiet_libraries(args.verbose)
    pipe = ColaDLMPipeline.from_pretrained(args.checkpoint_path, dtype=args.dtype)
    # A new folder that could not be written whole is removed; one that existed keeps what it held.
    created = not os.path.exists(args.output_path)
    with reported_write_errors(args.output_path, remove=args.output_path if created else None):
        pipe.save_pretrained(args.output_path)
    print(f"Saved a diffusers-format ColaDLMPipeline ({args.dtype}) to {args.output_path}")


def train(args):
    from ..training import TrainingConfig

    # A bad config, a missing file or an output folder that cannot be written answers before torch is imported.
    config = TrainingConfig.from_json(args.config)

    from ..training import train as run_training

    run_training(config)


def eval_run(args):
    from ..evaluation.data import load_records
    from ..evaluation.settings import EvalSettings, check_run_config, write_run_config

    # Every input is checked before the model loads, and before torch is imported.
    records = {task: load_records(task, args.data, args.limit) for task in args.tasks}
    settings = EvalSettings(
        model=args.model,
        gen_length=args.gen_length,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        scheduler=args.scheduler,
        temperature=args.temperature,
        seeds=tuple(range(args.seed, args.seed + args.seeds)),
        dtype=args.dtype,
    )
    check_run_config(args.output, settings, args.resume)

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from ..evaluation.generation import run_task
    from ..schedulers import scheduler_from_name

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    pipe = load_pipeline(args, default_device=state.device)
    # The run records the steps and guidance it generates with: the checkpoint's where no flag set them.
    settings = settings.resolved(pipe)
    check_run_config(args.output, settings, args.resume)
    state.wait_for_everyone()  # every process checks the folder before the main one records this run in it
    if state.is_main_process:
        write_run_config(args.output, settings)
    pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for task, task_records in records.items():
        with flag_errors():
            path = run_task(pipe, task, task_records, settings, args.output, args.batch_size, state=state)
        if state.is_main_process:
            print(f"{task}: {len(task_records)} records x {args.seeds} seed(s) in {path}")


def eval_score(args):
    from ..evaluation.scoring import format_table, score_directory, write_summary

    scores = score_directory(args.folder)
    print(format_table(scores))
    output = args.output or args.folder
    os.makedirs(output, exist_ok=True)
    print(f"Wrote {write_summary(output, scores)}")
