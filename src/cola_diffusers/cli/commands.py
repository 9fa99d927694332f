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

import json
import os
import socket


def load_pipeline(args, default_device=None):
    """
    The pipeline of `--model` in `--dtype` on `--device` (default: `default_device`, else CUDA where there is one,
    else the CPU).
    """
    import torch

    from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline

    dtype = None if args.dtype == "auto" else args.dtype
    pipe = ColaDLMPipeline.from_pretrained(args.model, dtype=dtype)
    device = args.device or default_device or ("cuda" if torch.cuda.is_available() else "cpu")
    return pipe.to(device)


def read_prompt_file(path: str) -> list[str]:
    """The prompts of a file: a line each, or JSONL records with a "prompt"."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompt-file {path} does not exist.")
    with open(path, encoding="utf-8") as file:
        lines = [line.rstrip("\n") for line in file if line.strip()]
    prompts = []
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("{"):
            record = json.loads(line)
            if "prompt" not in record:
                raise ValueError(f"--prompt-file {path}, line {number}: a JSON line needs a 'prompt'.")
            prompts.append(record["prompt"])
        else:
            prompts.append(line)
    return prompts


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


def generation_kwargs(args, prompts: list[str]) -> dict:
    """The pipeline call of `generate`: its prompts (or chats, with `--chat`) and sampling options."""
    import torch

    kwargs = {
        "gen_length": args.gen_length,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "block_length": args.block_length,
        "generator": [torch.Generator().manual_seed(args.seed + index) for index in range(len(prompts))],
        "max_sequence_length": args.max_model_len,
    }
    if args.chat or args.chat_format:
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        kwargs.update(messages=conversations, chat_format=args.chat_format)
    else:
        kwargs["prompt"] = prompts
    return kwargs


def print_json_lines(prompts: list[str], output):
    """A JSON line per prompt: its text, the completion's token ids and why it finished."""
    rows = zip(prompts, output.texts, output.sequences.tolist(), output.finish_reasons, output.num_tokens)
    for prompt, text, ids, finish_reason, num_tokens in rows:
        result = {"prompt": prompt, "text": text, "token_ids": ids[:num_tokens], "finish_reason": finish_reason}
        print(json.dumps(result, ensure_ascii=False))


def generate(args):
    from ..schedulers import scheduler_from_name

    prompts = read_prompts(args)
    pipe = load_pipeline(args)
    pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    # A bar for runs longer than a second; none inside streamed text.
    pipe.set_progress_bar_config(disable=args.stream or args.output == "json", leave=False, desc="blocks", delay=1)
    kwargs = generation_kwargs(args, prompts)
    if args.stream:
        for chunk in pipe.stream(**kwargs):
            if not chunk.is_preview:
                print(chunk.texts[0], end="", flush=True)
        print()
        return
    output = pipe(**kwargs)
    if args.output == "json":
        print_json_lines(prompts, output)
    else:
        for text in output.texts:
            print(text)


def serve(args):
    # A taken port is found before the model loads.
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as error:
            raise OSError(
                f"Cannot listen on {args.host}:{args.port} ({error.strerror}); pick another --port."
            ) from None

    from ..serving import create_app, serve_app

    pipe = load_pipeline(args)
    model_name = args.served_model_name or args.model
    if args.served_model_name is None and os.path.isdir(args.model):
        model_name = os.path.basename(os.path.normpath(args.model))
    app = create_app(
        pipe,
        model_name,
        api_key=args.api_key,
        max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=args.default_max_tokens,
        max_queue=args.max_queue,
        max_batch_size=args.max_batch_size,
        max_rows_per_request=args.max_rows_per_request,
        max_model_len=args.max_model_len,
        max_request_bytes=args.max_request_bytes,
        body_timeout=args.body_timeout,
        chat_format=args.chat_format,
        seed=args.seed,
        allowed_origins=args.allowed_origins,
        enable_docs=not args.disable_fastapi_docs,
    )
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

    from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline

    pipe = ColaDLMPipeline.from_pretrained(args.checkpoint_path, dtype=args.dtype)
    pipe.save_pretrained(args.output_path)
    print(f"Saved a diffusers-format ColaDLMPipeline ({args.dtype}) to {args.output_path}")


def train(args):
    from ..training import TrainingConfig
    from ..training import train as run_training

    run_training(TrainingConfig.from_json(args.config))


def eval_run(args):
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from ..evaluation.data import load_records
    from ..evaluation.generation import EvalSettings, check_run_config, run_task, write_run_config
    from ..schedulers import scheduler_from_name

    # Every input is checked before the model loads.
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
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    check_run_config(args.output, settings, args.resume)
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
        path = run_task(pipe, task, task_records, settings, args.output, args.batch_size, state=state)
        if state.is_main_process:
            print(f"{task}: {len(task_records)} records x {args.seeds} seed(s) in {path}")


def eval_score(args):
    from ..evaluation.scoring import format_table, score_directory, write_summary

    scores = score_directory(args.folder)
    print(format_table(scores))
    print(f"Wrote {write_summary(args.folder, scores)}")
