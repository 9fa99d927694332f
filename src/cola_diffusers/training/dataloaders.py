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

"""The batches of every training stage: tokenised lines, packed documents, conversations or couplings."""

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .config import TrainingConfig
from .couplings import collate_couplings, load_couplings
from .sft import build_sft_batch


def make_dataloader(accelerator: Accelerator, pipe: ColaDLMPipeline, config: TrainingConfig) -> DataLoader:
    """
    Shuffled batches of `train_file`: its lines as tokenised rows, or for distillation the teacher's couplings of
    them; with `packing`, this process's endless stream of packed rows.
    """
    if config.packing:
        data = data_module()
        dataset = data.load_text_dataset(config.train_file, text_column=config.text_column, streaming=config.streaming)
        rows = data.PackedRows(
            dataset,
            pipe.tokenizer,
            config.max_length,
            text_column=config.text_column,
            seed=config.seed,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
        )
        # Its own generator: creating an iterator then draws nothing from the global one, which resumes exactly.
        return DataLoader(rows, batch_size=config.batch_size, generator=torch.Generator().manual_seed(config.seed))
    if config.stage == "sft":
        samples, collate = conversation_rows(pipe, config), None
    else:
        with open(config.train_file, encoding="utf-8") as file:
            lines = [line.rstrip("\n") for line in file if line.strip()]
        if config.stage == "distill":
            with accelerator.autocast():
                samples = load_couplings(accelerator, pipe.to(accelerator.device), config, lines)
            collate = collate_couplings
        else:
            samples, collate = tokenised_rows(pipe, config, lines), None
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        samples, batch_size=config.batch_size, shuffle=True, drop_last=True, generator=generator, collate_fn=collate
    )


def conversation_rows(pipe: ColaDLMPipeline, config: TrainingConfig) -> list[dict[str, torch.Tensor]]:
    """SFT: the `messages` of `train_file`, rendered in `chat_format` and padded to `max_length` tokens."""
    conversations = data_module().load_text_dataset(config.train_file, text_column="messages")["messages"]
    batch = build_sft_batch(
        pipe.tokenizer,
        list(conversations),
        config.chat_format,
        config.max_length,
        pad_with_stop=config.pad_with_stop,
        stop_token_id=sft_stop_token_id(pipe, config),
    )
    return [
        {"input_ids": ids, "response": response, "loss_mask": loss}
        for ids, response, loss in zip(batch.input_ids, batch.response, batch.loss_mask)
    ]


def sft_stop_token_id(pipe: ColaDLMPipeline, config: TrainingConfig) -> int | None:
    """SFT: the id of `chat_stop_token`, which the tokenizer must know; None keeps the format's stop token."""
    if config.chat_stop_token is None:
        return None
    token_id = pipe.tokenizer.convert_tokens_to_ids(config.chat_stop_token)
    if token_id is None or token_id == pipe.tokenizer.unk_token_id:
        raise ValueError(f"`chat_stop_token` {config.chat_stop_token!r} is not a token of the tokenizer.")
    return token_id


def tokenised_rows(pipe: ColaDLMPipeline, config: TrainingConfig, lines: list[str]) -> list[dict[str, torch.Tensor]]:
    """
    Every line tokenised, ended by the eos token, right-padded (or cut) to `max_length`. With `learn_padding` the
    pad tokens count as tokens to learn, so that a model can end its text inside a block.
    """
    eos = pipe.tokenizer.eos_token_id
    pad = pipe.pad_token_id
    samples = []
    for ids in pipe.tokenizer(lines, add_special_tokens=True)["input_ids"]:
        ids = (ids + ([eos] if eos is not None else []))[: config.max_length]
        samples.append(
            {
                "input_ids": torch.tensor(ids + [pad] * (config.max_length - len(ids))),
                "attention_mask": torch.tensor(
                    [1] * len(ids) + [int(config.learn_padding)] * (config.max_length - len(ids))
                ),
            }
        )
    return samples


def data_module():
    """`training.data`, which reads data with 🤗 `datasets`, an extra of the package."""
    try:
        from . import data
    except ImportError as error:
        raise ImportError(
            "`packing` and the SFT stage read their data with `datasets`: pip install 'cola-diffusers[train]'."
        ) from error
    return data
