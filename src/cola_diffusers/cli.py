"""The `cola-diffusers` command: generate, serve, convert, train."""

import argparse
import os
import re
import sys

import torch

from .demo import DEMO_MODEL_PATH
from .pipelines.cola_dlm.chat import CHAT_FORMATS
from .schedulers import SCHEDULERS


def generate(args):
    from .pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline

    pipe = ColaDLMPipeline.from_pretrained(args.model)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    kwargs = {
        "gen_length": args.gen_length,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "generator": torch.Generator().manual_seed(args.seed),
        "max_sequence_length": args.max_model_len,
    }
    if args.chat or args.chat_format:
        kwargs.update(messages=[{"role": "user", "content": args.prompt}], chat_format=args.chat_format)
    else:
        kwargs["prompt"] = args.prompt
    if args.stream:
        for chunk in pipe.stream(**kwargs):
            if not chunk.is_preview:
                print(chunk.texts[0], end="", flush=True)
        print()
    else:
        print(pipe(**kwargs).texts[0])


def serve(args):
    import uvicorn

    from .pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
    from .serving import create_app

    pipe = ColaDLMPipeline.from_pretrained(args.model)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    model_name = args.model_name or args.model
    if args.model_name is None and os.path.isdir(args.model):
        model_name = os.path.basename(os.path.normpath(args.model))
    app = create_app(
        pipe,
        model_name,
        api_key=args.api_key or os.environ.get("COLA_API_KEY") or None,
        max_model_len=args.max_model_len,
        max_request_bytes=args.max_request_bytes,
        chat_format=args.chat_format,
    )
    uvicorn.run(app, host=args.host, port=args.port)


def convert(args):
    from .pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    pipe = ColaDLMPipeline.from_pretrained(args.checkpoint_path, dtype=dtypes[args.dtype])
    pipe.save_pretrained(args.output_path)
    print(f"Saved a diffusers-format ColaDLMPipeline ({args.dtype}) to {args.output_path}")


def train(args):
    from .training import TrainingConfig, train as run_training

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
    pipe = ColaDLMPipeline.from_pretrained(args.model, dtype=args.dtype).to(args.device or state.device)
    pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for task, task_records in records.items():
        path = run_task(pipe, task, task_records, settings, args.output, args.batch_size, state)
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
    if os.path.isdir(value) or (re.fullmatch(r"[\w][\w.-]*/[\w][\w.-]*", value) and not os.path.exists(value)):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither a checkpoint folder nor a Hub repo id (owner/name)")


def official_checkpoint(value: str) -> str:
    """A folder in the official release layout, or a Hub repo id."""
    from .loaders.official_checkpoint import is_official_layout

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


def add_model_argument(parser: argparse.ArgumentParser):
    parser.add_argument(
        "--model",
        default=DEMO_MODEL_PATH,
        type=existing_path_or_repo,
        help="Checkpoint folder (either layout) or Hub repo id; default the embedded demo.",
    )


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cola-diffusers", description="Cola-DLM text generation with diffusers.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate_parser = commands.add_parser("generate", help="Generate text from a prompt.")
    generate_parser.add_argument("prompt", help='The prompt; the embedded demo model reverses digits: "1234>".')
    add_model_argument(generate_parser)
    generate_parser.add_argument("--steps", type=positive_int, default=16, help="Denoising steps per block.")
    generate_parser.add_argument("--guidance", type=non_negative_float, default=7.0, help="Guidance scale.")
    generate_parser.add_argument("--gen-length", type=positive_int, default=64, help="New tokens.")
    generate_parser.add_argument("--seed", type=int, default=0)
    generate_parser.add_argument("--stream", action="store_true", help="Print the text block by block.")
    generate_parser.add_argument("--chat", action="store_true", help="Send the prompt as one user chat message.")
    add_context_arguments(generate_parser, chat="with --chat (implied)", new_tokens="new tokens")
    generate_parser.set_defaults(func=generate)

    serve_parser = commands.add_parser("serve", help="Serve an OpenAI-compatible API (see docs/serving.md).")
    add_model_argument(serve_parser)
    serve_parser.add_argument("--model-name", help="The model id clients pass; default the folder name or repo id.")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--api-key", help="Require `Authorization: Bearer KEY`; default $COLA_API_KEY.")
    add_context_arguments(serve_parser, chat="of chat requests", new_tokens="max_tokens")
    serve_parser.add_argument(
        "--max-request-bytes", type=positive_int, default=2**21, help="Larger request bodies get 413 (default 2 MiB)."
    )
    serve_parser.set_defaults(func=serve)

    convert_parser = commands.add_parser("convert", help="Convert the official layout to the diffusers format.")
    convert_parser.add_argument("--checkpoint_path", required=True, type=official_checkpoint)
    convert_parser.add_argument("--output_path", required=True)
    convert_parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    convert_parser.set_defaults(func=convert)

    eval_parser = commands.add_parser("eval", help="Run and score the official benchmark (see docs/evaluation.md).")
    eval_commands = eval_parser.add_subparsers(dest="eval_command", required=True)
    run_parser = eval_commands.add_parser(
        "run", help="Generate the answers of benchmark tasks.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_model_argument(run_parser)
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
    run_parser.add_argument("--gen-length", type=positive_int, default=32, help="New tokens per record.")
    run_parser.add_argument("--steps", type=positive_int, default=16, help="Denoising steps per block.")
    run_parser.add_argument("--guidance", type=non_negative_float, default=7.0, help="Guidance scale.")
    run_parser.add_argument("--scheduler", default="block-causal", choices=list(SCHEDULERS))
    run_parser.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 is greedy.")
    run_parser.add_argument("--seed", type=int, default=66, help="The first noise seed (the official benchmark's).")
    run_parser.add_argument("--seeds", type=positive_int, default=1, help="Noise seeds, from --seed on.")
    run_parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run_parser.add_argument("--device", help="Default: the process's accelerator, else the CPU.")
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
    except (ValueError, FileNotFoundError) as error:
        # Bad input names itself in one line; COLA_DIFFUSERS_DEBUG=1 shows where it was found.
        if os.environ.get("COLA_DIFFUSERS_DEBUG"):
            raise
        parser.exit(2, f"cola-diffusers: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
