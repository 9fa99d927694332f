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

"""The settings of a training run and their checks; no torch, so that a bad config is refused at once."""

import dataclasses
import difflib
import json
import os
import types
import typing

from .presets import PRESETS


OPTIMIZER_NAMES = ("adamw", "sgd", "muon")
# diffusers' `get_scheduler` names (`diffusers.optimization.SchedulerType`), listed here so that checking needs no torch.
LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "piecewise_constant",
)
TRACKERS = ("tensorboard", "wandb")
# The official SFT script's chat formats.
SFT_CHAT_FORMATS = ("text", "chatml")
STAGES = {
    "vae": "Stage 1 (VAE)",
    "prior": "Stage 2 (prior)",
    "distill": "Distillation",
    "vae_finetune": "VAE fine-tune",
    "sft": "SFT",
}


def setting(help: str, default=dataclasses.MISSING, default_factory=dataclasses.MISSING):
    """A `TrainingConfig` field whose `help` is its line in the settings table of docs/training.md."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


@dataclasses.dataclass
class TrainingConfig:
    """
    Settings of one training run, read from a JSON file by `TrainingConfig.from_json`.

    `stage` is `"vae"` (Stage 1), `"prior"` (Stage 2) or `"distill"` (a few-step student of the `pretrained_model`
    teacher). The models come from `pretrained_model` (a checkpoint of either layout) or, when it is None, are built
    from `transformer_config` / `vae_config` with the tokenizer `tokenizer_file`. `train_file` holds one training
    text (distillation: one prompt) per line. Each field's `help` documents it (`settings_table`).
    """

    stage: str = setting(
        '`"vae"` (Stage 1, the Text VAE), `"prior"` (Stage 2, the DiT prior on the VAE latents), `"distill"` (a'
        ' few-step student of the `pretrained_model` prior), `"vae_finetune"` (the VAE decoder\'s output layer,'
        ' for new special tokens) or `"sft"` (the prior on conversations).'
    )
    train_file: str = setting(
        "UTF-8 text file, one training example per line; blank lines are skipped, each line is ended by the eos token"
        " and padded or cut to `max_length` tokens. Distillation: one prompt per line, at most `max_length` tokens."
        ' SFT: a JSONL file (or `datasets` name) of `{"messages": [{"role", "content"}, ...]}` conversations.'
    )
    output_dir: str = setting(
        "Folder of the trained pipeline (diffusers format), `loss_history.json` and checkpoints."
    )
    preset: str | None = setting(
        "An official recipe whose settings are the defaults of this run's: "
        + ", ".join(f"`{name}`" for name in PRESETS)
        + " (docs/training.md, official recipes); settings given beside it win. Applied by `from_json` and"
        " `from_dict`.",
        None,
    )
    pretrained_model: str | None = setting(
        "Checkpoint to start from, either layout (Stage 2: normally Stage 1's `output_dir`; distillation: the"
        " teacher); null builds new models from `tokenizer_file` and the `*_config` settings.",
        None,
    )
    tokenizer_file: str | None = setting("`tokenizer.json` of new models (when `pretrained_model` is null).", None)
    transformer_config: dict = setting(
        "`ColaTransformer1DModel` arguments of a new DiT; `in_channels` defaults to the VAE's `latent_dim`.",
        default_factory=dict,
    )
    vae_config: dict = setting(
        "`AutoencoderKLColaText` arguments of a new VAE; `vocab_size` defaults to the tokenizer's.",
        default_factory=dict,
    )
    max_length: int = setting("Tokens per training row; a multiple of every `block_sizes` entry.", 64)
    packing: bool = setting(
        "Read `train_file` with `datasets` (a .txt, .jsonl or .parquet file, a folder of them, or a Hub dataset"
        " name) and pack its documents best-fit into full rows of `max_length` tokens, each document starting with"
        " `<|endoftext|>`, as the official loader does; every process reads its own shard. False: one line a row.",
        False,
    )
    text_column: str = setting("With `packing`: the column of the documents.", "text")
    streaming: bool = setting("With `packing`: stream the data instead of loading it (corpora beyond memory).", False)
    learn_padding: bool = setting(
        "Count padding as tokens to learn, so that the model can end its text inside a block.", False
    )
    block_sizes: list[int] = setting("Stage 2: block sizes, one drawn per sample.", default_factory=lambda: [4])
    block_size_probs: list[float] | None = setting(
        "Stage 2: the probability of each `block_sizes` entry (normalised); null: equally likely.", None
    )
    batch_size: int = setting("Rows per micro-batch and process.", 16)
    gradient_accumulation_steps: int = setting("Micro-batches per optimiser step.", 1)
    optimizer: str = setting(
        '`"adamw"`, `"sgd"` or `"muon"`: the official pretraining\'s Muon on the matrices (at `learning_rate`, with'
        " `weight_decay`) and AdamW on the other parameters (at `scalar_learning_rate`, without weight decay).",
        "adamw",
    )
    learning_rate: float = setting("Peak learning rate.", 3e-4)
    scalar_learning_rate: float | None = setting(
        'With `optimizer` `"muon"`: the AdamW learning rate of the parameters that are not matrices (the official'
        " 0.3, against 0.02 for the matrices); null: `learning_rate`.",
        None,
    )
    lr_scheduler: str = setting(
        "Learning-rate schedule, a name of diffusers' `get_scheduler`: "
        + ", ".join(f"`{n}`" for n in LR_SCHEDULERS)
        + ".",
        "constant",
    )
    lr_warmup_steps: int = setting("Optimiser steps of linear warm-up from 0 to `learning_rate`.", 0)
    adam_beta1: float = setting("AdamW's β₁.", 0.9)
    adam_beta2: float = setting("AdamW's β₂.", 0.999)
    adam_epsilon: float = setting("AdamW's ε.", 1e-8)
    weight_decay: float = setting("Weight decay of the optimiser.", 0.0)
    max_grad_norm: float | None = setting(
        "Clip the gradient to this global norm before each step; null: no clipping.", None
    )
    max_steps: int = setting("Optimiser steps to train, a resumed run's earlier steps included.", 1000)
    mixed_precision: str = setting('accelerate\'s mixed precision: `"no"`, `"fp16"` or `"bf16"`.', "no")
    seed: int = setting("Seed of the new weights, the data order, the noise and the block sizes.", 0)
    kl_weight: float = setting("Stage 1: weight of KL(q(z|x) ‖ N(0, I)).", 1e-4)
    mask_rate: float = setting("Stage 1: share of the input tokens replaced by the mask token.", 0.15)
    masked_token_weight: float = setting("Stage 1: weight of the masked-token cross-entropy.", 1.0)
    sample_posterior: bool = setting(
        "Decode (Stage 1) or train the prior on (Stage 2) a posterior sample; false: the posterior mean.", True
    )
    prompt_boundary_rate: float = setting(
        "Stage 2: probability that a block starts with clean (prompt) positions held at timestep 0.", 0.5
    )
    logit_mean: float = setting("Stage 2: location of the logit-normal noise level σ = sigmoid(N(mean, std²)).", 0.0)
    logit_std: float = setting("Stage 2: scale of the logit-normal noise level.", 1.0)
    noise_level_per: str = setting('Stage 2: one noise level per `"block"` or per `"sample"`.', "block")
    joint_vae: bool = setting(
        "Stage 2: train the VAE with the prior (the paper's joint Stage 2), regularised by a KL to its frozen"
        " starting encoder.",
        False,
    )
    joint_vae_weight: float = setting("Joint Stage 2: weight λ_VAE of the VAE's reconstruction terms.", 1.0)
    joint_entropy_weight: float = setting("Joint Stage 2: weight β of E_q[log q].", 1e-4)
    joint_reference_weight: float = setting("Joint Stage 2: weight λ_ref of KL(q ‖ q_ref).", 1.0)
    chat_format: str = setting(
        'SFT: how conversations are rendered, `"text"` (`User: ...` / `Assistant: ...■`) or `"chatml"`; saved with'
        " the model, so that `messages=` and the server use it.",
        "text",
    )
    chat_stop_token: str | None = setting(
        "SFT: the token that ends an assistant turn, when not the format's (`■`, `<|im_end|>`); saved too.", None
    )
    pad_with_stop: bool = setting(
        "SFT, chatml: pad with `<|im_end|>` (true) or `<|pad|>`; `text` always pads with its stop token.", True
    )
    boundary_mode: str = setting(
        'SFT: the prompt latents that are pure noise, `"token"` (after a response latent of their block) or `"block"`'
        " (all of a block that starts with a response latent), as the official option.",
        "token",
    )
    loss_mode: str = setting('SFT: `"sft"` (response latents only) or `"all_token"` (prompt latents too).', "sft")
    gen_length: int = setting("Distillation: new tokens the teacher generates per prompt.", 32)
    teacher_num_inference_steps: int = setting("Distillation: the teacher's steps per block.", 16)
    teacher_guidance_scale: float = setting(
        "Distillation: the teacher's guidance scale, folded into the student.", 7.0
    )
    teacher_batch_size: int = setting(
        "Distillation: prompts per teacher call and per file of `output_dir/couplings`.", 256
    )
    num_inference_steps: int = setting(
        "Distillation: the student's steps per block, the noise levels it is trained at and its saved default.", 1
    )
    gradient_checkpointing: bool = setting("Recompute the trained model's activations in the backward pass.", False)
    ema_decay: float | None = setting("Decay of an EMA of the trained weights, which become the final ones.", None)
    checkpoint_every: int | None = setting("Save `output_dir/checkpoint-{step}` every this many steps.", None)
    checkpoints_total_limit: int | None = setting(
        "Keep at most this many checkpoints, deleting the oldest once a new one is complete; null keeps all.", None
    )
    resume_from: str | None = setting(
        'A `checkpoint-{step}` folder to continue from, or `"latest"`: the newest complete one in `output_dir`'
        " (none: start afresh).",
        None,
    )
    overwrite_output_dir: bool = setting(
        "Train into an `output_dir` that holds a trained pipeline or checkpoints, replacing them; without it (or"
        " `resume_from`) such a folder is refused.",
        False,
    )
    report_to: str | None = setting(
        'accelerate tracker of the loss and learning rate: `"tensorboard"` (event files in `output_dir/logs`) or'
        ' `"wandb"`; null logs nothing.',
        None,
    )
    validation_file: str | None = setting(
        "Held-out data in `train_file`'s format: its loss, with fixed noise, is logged as `validation_loss`.", None
    )
    validation_every: int = setting("With `validation_file`: compute the validation loss every this many steps.", 500)
    validation_batches: int = setting("With `validation_file`: batches of the validation loss, at most.", 8)
    log_every: int = setting("Show the loss on the progress bar every this many steps.", 10)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check_type(field.name, getattr(self, field.name), field.type)
        if self.stage not in STAGES:
            raise ValueError(
                f'`stage` must be "vae" (Stage 1), "prior" (Stage 2), "distill", "vae_finetune" or "sft", got '
                f"{json.dumps(self.stage)}."
            )
        if self.chat_format not in SFT_CHAT_FORMATS:
            raise ValueError(
                f"`chat_format` must be one of {list(SFT_CHAT_FORMATS)}, got {json.dumps(self.chat_format)}."
            )
        if self.validation_file is not None and self.stage == "distill":
            raise ValueError("`validation_file` is not supported by the distillation stage.")
        if self.joint_vae and self.stage != "prior":
            raise ValueError(f'`joint_vae` is an option of `stage` "prior", not {json.dumps(self.stage)}.')
        if self.stage == "distill" and self.pretrained_model is None:
            raise ValueError('`stage` "distill" needs the teacher checkpoint in `pretrained_model`.')
        if self.pretrained_model is None and self.tokenizer_file is None:
            raise ValueError("Set `pretrained_model`, or `tokenizer_file` with `transformer_config`/`vae_config`.")
        choices = {"optimizer": OPTIMIZER_NAMES, "lr_scheduler": LR_SCHEDULERS, "noise_level_per": ("block", "sample")}
        choices.update(boundary_mode=("token", "block"), loss_mode=("sft", "all_token"))
        for name, names in choices.items():
            if getattr(self, name) not in names:
                raise ValueError(f"`{name}` must be one of {list(names)}, got {getattr(self, name)!r}.")
        if self.report_to is not None and self.report_to not in TRACKERS:
            raise ValueError(f"`report_to` must be one of {list(TRACKERS)} or null, got {self.report_to!r}.")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"`lr_warmup_steps` must be at least 0, got {self.lr_warmup_steps}.")
        for name in ("max_grad_norm", "checkpoints_total_limit"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive or null, got {getattr(self, name)}.")
        positive = ("max_length", "batch_size", "gradient_accumulation_steps", "max_steps", "log_every", "gen_length")
        positive += ("teacher_num_inference_steps", "teacher_batch_size", "num_inference_steps")
        positive += ("validation_every", "validation_batches")
        if self.teacher_guidance_scale < 0:
            raise ValueError(f"`teacher_guidance_scale` must be at least 0, got {self.teacher_guidance_scale}.")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"`checkpoint_every` must be at least 1 or null, got {self.checkpoint_every}.")
        if not self.block_sizes or min(self.block_sizes) < 1:
            raise ValueError(f"`block_sizes` must be a non-empty list of positive sizes, got {self.block_sizes}.")
        probs = self.block_size_probs
        if probs is not None and (len(probs) != len(self.block_sizes) or min(probs) < 0 or sum(probs) <= 0):
            raise ValueError(
                f"`block_size_probs` must hold one non-negative weight per `block_sizes` entry "
                f"({len(self.block_sizes)}), not all zero, got {probs}."
            )
        if any(self.max_length % size for size in self.block_sizes):
            raise ValueError(f"`max_length` ({self.max_length}) must be a multiple of every `block_sizes` entry.")

    @classmethod
    def from_json(cls, path: str) -> "TrainingConfig":
        """Reads and checks a JSON object of settings; every error names `path` and the setting in one line."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"training config `{path}` does not exist.")
        with open(path, encoding="utf-8") as file:
            try:
                values = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"training config `{path}` is not valid JSON: "
                    f"line {error.lineno}, column {error.colno}: {error.msg}."
                ) from None
        if not isinstance(values, dict):
            raise ValueError(
                f"training config `{path}` must hold a JSON object of settings, got {type(values).__name__}."
            )
        try:
            config = cls.from_dict(values)
            config.check_files()
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(f"training config `{path}`: {error}") from None
        return config

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingConfig":
        """
        Settings from a dict, over the defaults of its `preset`; an unknown or missing setting is refused in one
        message, with the closest name for a misspelt one.
        """
        preset = values.get("preset")
        if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
            raise ValueError(f"`preset` must be one of {list(PRESETS)} or null, got {json.dumps(preset)}.")
        values = {**PRESETS.get(preset, {}), **values}
        fields = {field.name: field for field in dataclasses.fields(cls)}
        problems = []
        unknown = [key for key in values if key not in fields]
        guesses = {key: difflib.get_close_matches(key, fields, n=1) for key in unknown}
        if len(unknown) == 1:
            (key,) = unknown
            problems.append(
                f"unknown training setting `{key}`" + "".join(f"; did you mean `{g}`?" for g in guesses[key])
            )
        elif unknown:
            names = [f"`{key}`" + "".join(f" (did you mean `{g}`?)" for g in guesses[key]) for key in unknown]
            problems.append(f"unknown training settings {', '.join(names)}")
        required = [
            name for name, field in fields.items() if field.default is field.default_factory is dataclasses.MISSING
        ]
        problems += [f"missing required setting `{name}`" for name in required if name not in values]
        if problems:
            message = "; ".join(problems)
            raise ValueError(message if message.endswith("?") else f"{message}.")
        return cls(**values)

    def check_files(self):
        """
        Raises `FileNotFoundError` for a missing `train_file`, `tokenizer_file` (when used) or `resume_from`,
        `ValueError` for a `train_file` of fewer lines than one optimiser step takes, and for an `output_dir` that
        cannot be written or that holds a run this one would overwrite.
        """
        self.check_output_dir()
        dataset = self.packing or self.stage == "sft"
        paths = {} if dataset and not os.path.exists(self.train_file) else {"train_file": self.train_file}
        if self.resume_from != "latest":
            paths["resume_from"] = self.resume_from
        if self.pretrained_model is None:
            paths["tokenizer_file"] = self.tokenizer_file
        for name, path in paths.items():
            if path is not None and not os.path.exists(path):
                raise FileNotFoundError(f"`{name}` `{path}` does not exist.")
        if self.packing or self.stage == "sft":
            return  # a dataset, possibly a Hub name or a stream: its size is not known before reading it
        with open(self.train_file, encoding="utf-8") as file:
            num_lines = sum(1 for line in file if line.strip())
        if num_lines < self.batch_size * self.gradient_accumulation_steps:
            raise ValueError(
                f"`train_file` `{self.train_file}` has {num_lines} non-empty lines, fewer than one optimiser step "
                f"takes (`batch_size` {self.batch_size} × `gradient_accumulation_steps` "
                f"{self.gradient_accumulation_steps})."
            )

    def check_output_dir(self):
        """Refuses an `output_dir` that cannot be written, or that holds a run unless resumed or overwritten."""
        existing = os.path.abspath(self.output_dir)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            reason = "is not a folder" if not os.path.isdir(existing) else "cannot be written"
            raise ValueError(f"`output_dir` `{self.output_dir}`: {existing} {reason}.")
        if self.resume_from is not None or self.overwrite_output_dir or existing != os.path.abspath(self.output_dir):
            return
        held = [name for name in os.listdir(existing) if name == "model_index.json" or name.startswith("checkpoint-")]
        if held:
            raise ValueError(
                f"`output_dir` `{self.output_dir}` holds a run ({sorted(held)[0]}); set `resume_from` to continue it"
                " or `overwrite_output_dir` to replace it."
            )


JSON_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object"}


def check_type(name: str, value, annotation):
    """Raises a `ValueError` unless `value` is JSON of the field's type (an integer passes as a number)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    expected = []
    for option in options:
        if option is type(None):
            if value is None:
                return
            expected.append("null")
        elif typing.get_origin(option) is list:
            (entry_type,) = typing.get_args(option)
            accepted = (int, float) if entry_type is float else (int,)
            if isinstance(value, list) and all(type(entry) in accepted for entry in value):
                return
            expected.append("a list of integers" if entry_type is int else "a list of numbers")
        else:
            accepted = (int, float) if option is float else option
            if isinstance(value, accepted) and (option is bool or not isinstance(value, bool)):
                return
            expected.append(JSON_KINDS[option])
    raise ValueError(f"`{name}` must be {' or '.join(expected)}, got {json.dumps(value, default=repr)}.")
