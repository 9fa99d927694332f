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

"""
Pretraining data of Cola-DLM: text datasets from local files or the Hub, packed into full rows of tokens with the
official loader's BOS-aligned best-fit packing, sharded across processes and exactly resumable.
"""

import itertools
import os
from collections.abc import Iterable, Iterator

import torch
from datasets import Dataset, IterableDataset, load_dataset
from datasets.distributed import split_dataset_by_node

from ..loaders.tokenizer import EOS_TOKEN


# The `datasets` builder that reads each kind of local file.
BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_text_dataset(
    source: str,
    *,
    text_column: str = "text",
    split: str = "train",
    streaming: bool = False,
    **load_kwargs,
) -> Dataset | IterableDataset:
    """
    Loads the documents of `source` with 🤗 Datasets.

    Args:
        source (`str`):
            A local `.txt` (one document per line; blank lines are skipped), `.json`/`.jsonl` or `.parquet` file, a
            local folder of files of one of these kinds, or the name of a dataset on the Hub.
        text_column (`str`, defaults to `"text"`):
            The column holding the documents' text (always `"text"` for `.txt` files).
        split (`str`, defaults to `"train"`):
            The split to load. Local files form the split `"train"`, so only `"train"` or a slice of it such as
            `"train[:90%]"` apply to them.
        streaming (`bool`, defaults to `False`):
            Whether to return an `IterableDataset` that reads the documents lazily.
        load_kwargs:
            Passed on to `datasets.load_dataset`, e.g. `name` (a Hub dataset's configuration) or `cache_dir`.

    Returns:
        A `datasets.Dataset`, or a `datasets.IterableDataset` with `streaming`, that has the column `text_column`.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        files = sorted(
            os.path.join(source, name)
            for name in os.listdir(source)
            if os.path.isfile(os.path.join(source, name)) and os.path.splitext(name)[1] in BUILDERS
        )
        kinds = {BUILDERS[os.path.splitext(file)[1]] for file in files}
        if not files:
            raise FileNotFoundError(
                f"`source` `{source}` is a folder without {', '.join(BUILDERS)} files to read documents from."
            )
        if len(kinds) > 1:
            raise ValueError(f"`source` `{source}` mixes files of kinds {sorted(kinds)}; keep one kind per folder.")
        builder = kinds.pop()
    elif os.path.isfile(source):
        extension = os.path.splitext(source)[1]
        if extension not in BUILDERS:
            raise ValueError(
                f"`source` `{source}` has the unknown extension `{extension}`; expected one of {', '.join(BUILDERS)}."
            )
        files, builder = [source], BUILDERS[extension]
    elif os.path.splitext(source)[1] in BUILDERS or source.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"`source` `{source}` does not exist.")
    else:
        files, builder = None, None

    if builder is None:
        dataset = load_dataset(source, split=split, streaming=streaming, **load_kwargs)
    else:
        dataset = load_dataset(builder, data_files=files, split=split, streaming=streaming, **load_kwargs)

    column_names = dataset.column_names
    if column_names is None:
        # A streaming dataset may not know its columns until it reads its first document.
        column_names = list(next(iter(dataset), {text_column: None}))
    if text_column not in column_names:
        raise ValueError(
            f"`text_column` `{text_column}` is not a column of `source` `{source}`; its columns are {column_names}."
        )
    if builder == "text":
        dataset = dataset.filter(lambda text: bool(text.strip()), input_columns="text", **_in_memory(dataset))
    return dataset


def pack_documents(documents: Iterable[list[int]], row_length: int, buffer_size: int = 1000) -> Iterator[list[int]]:
    """
    Packs documents of token ids into rows of exactly `row_length` tokens by the official loader's best-fit packing.

    Before each placement the buffer is topped up to `buffer_size` documents in the order of `documents`. A row is
    filled by moving into it, whole, the longest buffered document that fits in the room left (the earliest of equally
    long ones); when none fits, the shortest buffered document (the earliest of equally short ones) is cut to the
    room left and the rest of it is discarded. Rows are always full; there is no padding.

    The official loader packs rows of `T + 1` tokens and drops the last token of each (inputs and targets shifted by
    one); here a row has `row_length` tokens and nothing is dropped. The official loader also tops its buffer up in
    whole tokenizer batches (so it holds up to a batch more than `buffer_size` documents); here one document at a
    time, which gives the official rows when its batches are of one document. When `documents` ends, the buffer is
    packed until it is empty and a last, partly filled row is dropped.

    Args:
        documents (`Iterable[list[int]]`):
            The documents' token ids, each with its BOS token already in front (see `tokenize_documents`).
        row_length (`int`):
            The number of tokens of every row.
        buffer_size (`int`, defaults to 1000):
            How many documents the packing chooses from.

    Returns:
        An iterator over the rows, each a list of `row_length` token ids.
    """
    if row_length < 1 or buffer_size < 1:
        raise ValueError(f"`row_length` ({row_length}) and `buffer_size` ({buffer_size}) must be at least 1.")
    documents = iter(documents)
    buffer = []
    lengths = []
    while True:
        row = []
        while len(row) < row_length:
            for document in itertools.islice(documents, buffer_size - len(buffer)):
                buffer.append(document)
                lengths.append(len(document))
            if not buffer:
                return
            remaining = row_length - len(row)
            best_index, best_length = -1, 0
            for index, length in enumerate(lengths):
                if best_length < length <= remaining:
                    best_index, best_length = index, length
            if best_index < 0:
                shortest = min(lengths)
                best_index = lengths.index(shortest)
            del lengths[best_index]
            row.extend(buffer.pop(best_index)[:remaining])
        yield row


def get_bos_token_id(tokenizer) -> int:
    """The id of the tokenizer's `<|endoftext|>` token, which starts every packed document."""
    if EOS_TOKEN not in tokenizer.get_vocab():
        raise ValueError(f"The tokenizer has no `{EOS_TOKEN}` token to mark the start of each document.")
    return tokenizer.convert_tokens_to_ids(EOS_TOKEN)


def tokenize_documents(
    texts: Iterable[str], tokenizer, *, bos_token_id: int | None = None, batch_size: int = 128
) -> Iterator[list[int]]:
    """
    Tokenises `texts` in batches of `batch_size` with a 🤗 Transformers tokenizer, without its special tokens, and
    puts `bos_token_id` (by default the tokenizer's `<|endoftext|>` id) in front of each document.
    """
    bos = get_bos_token_id(tokenizer) if bos_token_id is None else bos_token_id
    texts = iter(texts)
    while batch := list(itertools.islice(texts, batch_size)):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            yield [bos, *ids]


class PackedRows(torch.utils.data.IterableDataset):
    """
    Rows of `row_length` tokens packed from one process's shard of a text dataset, as
    `{"input_ids": LongTensor(row_length), "attention_mask": ones}`.

    Each epoch shuffles all documents with the seed `seed + epoch` (when `shuffle`), then keeps this process's shard
    of them (`datasets.distributed.split_dataset_by_node`), so that the shards of the processes are disjoint and
    together hold every document. The documents of successive epochs form one stream, tokenised and packed by
    `pack_documents`; its buffer carries over from one epoch to the next, as in the official loader. Without
    `num_epochs` the rows never end, so a training loop counts its optimiser steps.

    The rows are a deterministic function of the arguments, so that iterating again with `start_row=n` yields rows
    `n, n + 1, ...` of the uninterrupted stream. Resuming regenerates the first `n` rows and throws them away: it costs
    reading, tokenising and packing the documents of `n` rows once more, linear in `n` (no tensors are made for them).
    A `DataLoader` of these rows has `num_workers` 0 or 1: more workers would each pack the same rows.

    Args:
        dataset (`datasets.Dataset` or `datasets.IterableDataset`):
            The documents, e.g. from `load_text_dataset`; the same on every process.
        tokenizer:
            A 🤗 Transformers tokenizer.
        row_length (`int`):
            The number of tokens of every row.
        text_column (`str`, defaults to `"text"`):
            The column holding the documents' text.
        buffer_size (`int`, defaults to 1000):
            How many documents the packing chooses from (the official loader's 1000).
        shuffle (`bool`, defaults to `True`):
            Whether each epoch shuffles the order of the documents.
        seed (`int`, defaults to 0):
            The seed of the first epoch's shuffle.
        shuffle_buffer_size (`int`, defaults to 10000):
            The size of the shuffle buffer of a streaming dataset (a map-style dataset is shuffled whole).
        process_index (`int`, defaults to 0) and num_processes (`int`, defaults to 1):
            This process and the number of processes that share the documents.
        start_row (`int`, defaults to 0):
            The number of rows this process has already consumed: iteration starts at this row. For a training loop
            that is the optimiser steps taken times the per-process batch size times the gradient-accumulation steps.
        num_epochs (`int`, *optional*):
            Stop after this many passes over the documents (the last, partly filled row dropped); endless when None.
        tokenizer_batch_size (`int`, defaults to 128):
            How many documents are tokenised together.
        bos_token_id (`int`, *optional*):
            The token in front of each document; by default the tokenizer's `<|endoftext|>` id.
    """

    def __init__(
        self,
        dataset: Dataset | IterableDataset,
        tokenizer,
        row_length: int,
        *,
        text_column: str = "text",
        buffer_size: int = 1000,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer_size: int = 10_000,
        process_index: int = 0,
        num_processes: int = 1,
        start_row: int = 0,
        num_epochs: int | None = None,
        tokenizer_batch_size: int = 128,
        bos_token_id: int | None = None,
    ):
        if not 0 <= process_index < num_processes:
            raise ValueError(f"`process_index` ({process_index}) must be in [0, `num_processes` ({num_processes})).")
        if start_row < 0:
            raise ValueError(f"`start_row` ({start_row}) must be at least 0.")
        if row_length < 1 or buffer_size < 1:
            raise ValueError(f"`row_length` ({row_length}) and `buffer_size` ({buffer_size}) must be at least 1.")
        if dataset.column_names is not None and text_column not in dataset.column_names:
            raise ValueError(
                f"`text_column` `{text_column}` is not a column of `dataset`; its columns are {dataset.column_names}."
            )
        if isinstance(dataset, Dataset) and len(dataset) < num_processes:
            raise ValueError(
                f"`dataset` has {len(dataset)} documents, fewer than the {num_processes} processes that share them."
            )
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.row_length = row_length
        self.text_column = text_column
        self.buffer_size = buffer_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer_size = shuffle_buffer_size
        self.process_index = process_index
        self.num_processes = num_processes
        self.start_row = start_row
        self.num_epochs = num_epochs
        self.tokenizer_batch_size = tokenizer_batch_size
        self.bos_token_id = get_bos_token_id(tokenizer) if bos_token_id is None else bos_token_id

    def shard(self, epoch: int) -> Dataset | IterableDataset:
        """This process's documents of epoch `epoch` (from 0), in the order they are packed."""
        dataset = self.dataset
        if self.shuffle and isinstance(dataset, IterableDataset):
            dataset = dataset.shuffle(seed=self.seed + epoch, buffer_size=self.shuffle_buffer_size)
        elif self.shuffle:
            dataset = dataset.shuffle(seed=self.seed + epoch, **_in_memory(dataset))
        return split_dataset_by_node(dataset, rank=self.process_index, world_size=self.num_processes)

    def texts(self) -> Iterator[str]:
        """The text of this process's documents, epoch after epoch."""
        for epoch in itertools.count() if self.num_epochs is None else range(self.num_epochs):
            empty = True
            for batch in self.shard(epoch).iter(batch_size=self.tokenizer_batch_size):
                empty = False
                yield from batch[self.text_column]
            if empty:
                raise ValueError(
                    f"Process {self.process_index} of {self.num_processes} has no documents to pack: `dataset` is "
                    "empty, has fewer documents than there are processes, or gave this process only empty files."
                )

    def rows(self) -> Iterator[list[int]]:
        """The packed rows as lists of token ids, from row `start_row` on."""
        documents = tokenize_documents(
            self.texts(), self.tokenizer, bos_token_id=self.bos_token_id, batch_size=self.tokenizer_batch_size
        )
        rows = pack_documents(documents, self.row_length, self.buffer_size)
        return itertools.islice(rows, self.start_row, None)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.num_workers > 1:
            raise ValueError(
                "`PackedRows` packs one stream per process; use a `DataLoader` with `num_workers` 0 or 1, "
                f"not {worker.num_workers}."
            )
        for row in self.rows():
            input_ids = torch.tensor(row, dtype=torch.long)
            yield {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def _in_memory(dataset) -> dict:
    """Keeps the indices of a map-style dataset's shuffle or filter in memory, so processes write no cache files."""
    return {"keep_in_memory": True} if isinstance(dataset, Dataset) else {}
