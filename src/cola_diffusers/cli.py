"""
The `cola-diffusers` command: generate, serve, convert, train, eval.

Arguments are parsed and checked before torch, diffusers or transformers are imported, so `--help` and argument
errors answer at once; each command imports what it needs.
"""

import argparse
import json
import os
import socket
import sys

from .demo import DEMO_MODEL_PATH
from .generation.chat import CHAT_FORMATS
from .generation.inputs import DEFAULTS
from .loaders.layout import REPO_ID, is_official_layout
from .schedulers import SCHEDULERS


DTYPES = ["auto", "float32", "bfloat16", "float16"]


def load_pipeline(args):
    """The pipeline of `--model` in `--dtype` on `--device` (default: CUDA where there is one, else the CPU)."""
    import torch

    from .pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline

    dtype = None if args.dtype == "auto" else args.dtype
    pipe = ColaDLMPipeline.from_pretrained(args.model, dtype=dtype)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return pipe.to(device)


def read_prompts(args) -> list[str]:
    """The positional prompts, then those of `--prompt-file` (a line each, or JSONL records with a "prompt")."""
    prompts = list(args.prompt)
    if args.prompt_file:
        if not os.path.isfile(args.prompt_file):
            raise FileNotFoundError(f"--prompt-file {args.prompt_file} does not exist.")
        with open(args.prompt_file, encoding="utf-8") as file:
            lines = [line.rstrip("\n") for line in file if line.strip()]
        for number, line in enumerate(lines, start=1):
            if line.lstrip().startswith("{"):
                record = json.loads(line)
                if "prompt" not in record:
                    raise ValueError(f"--prompt-file {args.prompt_file}, line {number}: a JSON line needs a 'prompt'.")
                prompts.append(record["prompt"])
            else:
                prompts.append(line)
    if not prompts:
        raise ValueError("Give a prompt, several prompts, or --prompt-file.")
    empty = [index for index, prompt in enumerate(prompts) if not prompt.strip()]
    if empty:
        raise ValueError(f"Prompt {empty[0]} is empty; every prompt needs at least one token.")
    if args.stream and len(prompts) > 1:
        raise ValueError(f"--stream prints one prompt's text as it comes; got {len(prompts)} prompts.")
    return prompts


def generate(args):
    import torch

    from .schedulers import scheduler_from_name

    prompts = read_prompts(args)
    pipe = load_pipeline(args)
    pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    # A bar for runs longer than a second; none inside streamed text.
    pipe.set_progress_bar_config(disable=args.stream or args.output == "json", leave=False, desc="blocks", delay=1)
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
    if args.stream:
        for chunk in pipe.stream(**kwargs):
            if not chunk.is_preview:
                print(chunk.texts[0], end="", flush=True)
        print()
        return
    output = pipe(**kwargs)
    stop_token_ids, stop = pipe.stop_criteria(chat_format=kwargs.get("chat_format") if args.chat else None)
    for prompt, text, ids in zip(prompts, output.texts, output.sequences.tolist()):
        if args.output == "json":
            completion = pipe.truncate(ids, stop_token_ids, stop)
            finish_reason = "stop" if completion.stopped else "length"
            result = {
                "prompt": prompt,
                "text": text,
                "token_ids": completion.token_ids,
                "finish_reason": finish_reason,
            }
            print(json.dumps(result, ensure_ascii=False))
        else:
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

    import uvicorn

    from .serving import create_app

    pipe = load_pipeline(args)
    pipe.set_progress_bar_config(disable=True)
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
        max_model_len=args.max_model_len,
        max_request_bytes=args.max_request_bytes,
        chat_format=args.chat_format,
    )
    uvicorn.run(app, host=args.host, port=args.port)


def convert(args):
    if os.path.isdir(args.output_path) and os.listdir(args.output_path) and not args.overwrite:
        raise ValueError(f"--output-path {args.output_path} is not empty; pass --overwrite to replace what is there.")

    from .pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline

    pipe = ColaDLMPipeline.from_pretrained(args.checkpoint_path, dtype=args.dtype)
    pipe.save_pretrained(args.output_path)
    print(f"Saved a diffusers-format ColaDLMPipeline ({args.dtype}) to {args.output_path}")


def train(args):
    from .training import TrainingConfig
    from .training import train as run_training

    run_training(TrainingConfig.from_json(args.config))


def eval_run(args):
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from .evaluation.data import load_records
    from .evaluation.generation import EvalSettings, check_run_config, run_task, write_run_config
    from .pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
    from .schedulers import scheduler_from_name

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
    state.wait_for_everyone()  # every process checks the folder before the main one records this run in it
    if state.is_main_process:
        write_run_config(args.output, settings)
    dtype = None if args.dtype == "auto" else args.dtype
    pipe = ColaDLMPipeline.from_pretrained(args.model, dtype=dtype).to(args.device or state.device)
    pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for task, task_records in records.items():
        path = run_task(pipe, task, task_records, settings, args.output, args.batch_size, state=state)
        if state.is_main_process:
            print(f"{task}: {len(task_records)} records x {args.seeds} seed(s) in {path}")


def eval_score(args):
    from .evaluation.scoring import format_table, score_directory, write_summary

    scores = score_directory(args.folder)
    print(format_table(scores))
    print(f"Wrote {write_summary(args.folder, scores)}")


def task_list(value: str) -> list[str]:
    """Comma-separated task names, each one of the evaluation tasks."""
    from .evaluation.data import TASK_NAMES

    tasks = [task.strip() for task in value.split(",") if task.strip()]
    unknown = [task for task in tasks if task not in TASK_NAMES]
    if not tasks or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown task {unknown[0] if unknown else value!r}; the tasks are {', '.join(TASK_NAMES)}"
        )
    return tasks


def existing_path_or_repo(value: str) -> str:
    """A local folder, or a Hub repo id (`owner/name`); anything else is refused before loading."""
    if os.path.isdir(value) or (REPO_ID.fullmatch(value) and not os.path.exists(value)):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither a checkpoint folder nor a Hub repo id (owner/name)")


def official_checkpoint(value: str) -> str:
    """A folder in the official release layout, or a Hub repo id."""
    value = existing_path_or_repo(value)
    if os.path.isdir(value) and not is_official_layout(value):
        raise argparse.ArgumentTypeError(f"{value} is not in the official layout (no `cola_dlm/` folder)")
    return value


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def probability(value: str) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return number


def environment(name: str, default, kind=str):
    """The official adapter's `COLA_*` environment variable `name` as a default, else `default`."""
    value = os.environ.get(name)
    return default if value in (None, "") else kind(value)


def add_model_arguments(parser: argparse.ArgumentParser, device: str = "CUDA where there is one, else the CPU"):
    parser.add_argument(
        "--model",
        default=DEMO_MODEL_PATH,
        type=existing_path_or_repo,
        help="Checkpoint folder (either layout) or Hub repo id; default the embedded demo.",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="Weights' dtype; auto keeps the checkpoint's.")
    parser.add_argument("--device", help=f"Where the model runs; default {device}.")


def add_context_arguments(parser: argparse.ArgumentParser, chat: str, new_tokens: str):
    """`--chat-format` and `--max-model-len`, shared by `generate` and `serve`."""
    parser.add_argument(
        "--chat-format",
        choices=list(CHAT_FORMATS),
        help=f"How the messages {chat} become a prompt; default the checkpoint's, else plain.",
    )
    parser.add_argument(
        "--max-model-len",
        type=positive_int,
        help=f"Prompt plus {new_tokens} at most; default the checkpoint's, else 4096.",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, gen_length: int):
    parser.add_argument("--gen-length", type=positive_int, default=gen_length, help="New tokens per prompt.")
    parser.add_argument(
        "--steps", type=positive_int, default=DEFAULTS.num_inference_steps, help="Denoising steps per block."
    )
    parser.add_argument("--guidance", type=non_negative_float, default=DEFAULTS.guidance_scale, help="Guidance scale.")
    parser.add_argument("--scheduler", default="block-causal", choices=list(SCHEDULERS), help="The ODE solver.")
    parser.add_argument(
        "--temperature", type=non_negative_float, default=DEFAULTS.temperature, help="Token sampling; 0 is greedy."
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="cola-diffusers", description="Cola-DLM text generation with diffusers.")
    parser.add_argument(
        "--debug", action="store_true", help="Show the traceback of an error (or set COLA_DIFFUSERS_DEBUG=1)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    generate_parser = commands.add_parser("generate", help="Generate text from prompts.", formatter_class=defaults)
    generate_parser.add_argument(
        "prompt", nargs="*", help='Prompts; the embedded demo model reverses digits: "1234>".'
    )
    generate_parser.add_argument("--prompt-file", help="More prompts: one per line, or JSONL with a 'prompt' field.")
    add_model_arguments(generate_parser)
    add_sampling_arguments(generate_parser, gen_length=64)
    generate_parser.add_argument("--top-k", type=positive_int, help="Keep the k likeliest tokens (temperature > 0).")
    generate_parser.add_argument("--top-p", type=probability, help="Nucleus sampling mass (temperature > 0).")
    generate_parser.add_argument("--block-length", type=positive_int, help="Latents per block; default the model's.")
    generate_parser.add_argument("--seed", type=int, default=0, help="Prompt i generates with seed + i.")
    generate_parser.add_argument("--stream", action="store_true", help="Print the text block by block.")
    generate_parser.add_argument("--chat", action="store_true", help="Send each prompt as one user chat message.")
    add_context_arguments(generate_parser, chat="with --chat (implied)", new_tokens="new tokens")
    generate_parser.add_argument("--output", choices=["text", "json"], default="text", help="json: a line per prompt.")
    generate_parser.set_defaults(func=generate)

    serve_parser = commands.add_parser("serve", help="Serve an OpenAI-compatible API.", formatter_class=defaults)
    add_model_arguments(serve_parser, device="$COLA_DEVICE, else CUDA where there is one, else the CPU")
    serve_parser.set_defaults(device=environment("COLA_DEVICE", None))
    serve_parser.add_argument(
        "--served-model-name",
        "--model-name",
        default=environment("COLA_MODEL_NAME", None),
        help="The id clients pass as `model` (the official adapter's is cola-dlm); default $COLA_MODEL_NAME, else "
        "the folder name or repo id.",
    )
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument(
        "--api-key", default=environment("COLA_API_KEY", None), help="Require `Authorization: Bearer KEY`."
    )
    add_context_arguments(serve_parser, chat="of chat requests", new_tokens="max_tokens")
    serve_parser.add_argument(
        "--max-tokens-limit",
        type=positive_int,
        default=environment("COLA_MAX_NEW_TOKENS_LIMIT", 512, int),
        help="The largest max_tokens a request may ask for.",
    )
    serve_parser.add_argument(
        "--default-max-tokens",
        type=positive_int,
        default=environment("COLA_DEFAULT_MAX_NEW_TOKENS", 64, int),
        help="max_tokens of requests that set none.",
    )
    serve_parser.add_argument("--max-batch-size", type=positive_int, default=16, help="Prompts per pipeline call.")
    serve_parser.add_argument("--max-queue", type=positive_int, default=64, help="Requests waiting or running.")
    serve_parser.add_argument(
        "--max-request-bytes", type=positive_int, default=2**21, help="Larger request bodies get 413."
    )
    serve_parser.set_defaults(func=serve)

    convert_parser = commands.add_parser(
        "convert", help="Convert the official layout to the diffusers format.", formatter_class=defaults
    )
    convert_parser.add_argument("--checkpoint-path", "--checkpoint_path", required=True, type=official_checkpoint)
    convert_parser.add_argument("--output-path", "--output_path", required=True)
    convert_parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    convert_parser.add_argument("--overwrite", action="store_true", help="Write into a folder that is not empty.")
    convert_parser.set_defaults(func=convert)

    eval_parser = commands.add_parser("eval", help="Run and score the official benchmark (see docs/evaluation.md).")
    eval_commands = eval_parser.add_subparsers(dest="eval_command", required=True)
    run_parser = eval_commands.add_parser(
        "run", help="Generate the answers of benchmark tasks.", formatter_class=defaults
    )
    add_model_arguments(run_parser, device="the process's accelerator, else the CPU")
    run_parser.add_argument(
        "--tasks",
        required=True,
        type=task_list,
        help="Comma-separated: lambada, mmlu, obqa, hellaswag, race, siqa, squad, story_cloze, reverse_digits.",
    )
    run_parser.add_argument("--data", help="Folder of <task>.jsonl records (not needed for reverse_digits).")
    run_parser.add_argument("--output", required=True, help="Folder for <task>.jsonl results.")
    run_parser.add_argument("--limit", type=positive_int, help="The first N records of every task.")
    run_parser.add_argument("--batch-size", type=positive_int, default=20)
    add_sampling_arguments(run_parser, gen_length=DEFAULTS.gen_length)
    run_parser.add_argument("--seed", type=int, default=66, help="The first noise seed (the official benchmark's).")
    run_parser.add_argument("--seeds", type=positive_int, default=1, help="Noise seeds, from --seed on.")
    run_parser.add_argument("--resume", action="store_true", help="Continue a run in --output with its settings.")
    run_parser.set_defaults(func=eval_run)
    score_parser = eval_commands.add_parser("score", help="Score every <task>.jsonl of a folder.")
    score_parser.add_argument("folder", help="A folder of <task>.jsonl results.")
    score_parser.set_defaults(func=eval_score)

    train_parser = commands.add_parser("train", help="Train a stage from a JSON config (see docs/training.md).")
    train_parser.add_argument("--config", required=True, help="JSON file of TrainingConfig settings.")
    train_parser.set_defaults(func=train)
    return parser


def main(argv: list[str] | None = None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        # Bad input names itself in one line; --debug (or COLA_DIFFUSERS_DEBUG=1) shows where it was found.
        if args.debug or os.environ.get("COLA_DIFFUSERS_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        parser.exit(2, f"cola-diffusers: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
