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

"""Pretraining data: loading text datasets, best-fit packing, sharding across processes and resuming."""

import itertools
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset, IterableDataset

from cola_diffusers.loaders.tokenizer import load_tokenizer
from cola_diffusers.training.data import (
    PackedRows,
    get_bos_token_id,
    load_text_dataset,
    pack_documents,
    tokenize_documents,
)

from ..conftest import FIXTURE_DIR


DOCUMENTS = [f"the river story number {i} ends here." for i in range(10)] + [
    "a long day of work and play at home, and then the long way back to the river.",
    "short one.",
    "the end of the day came with rain, and the old man went home to his house by the river to sleep.",
    "play.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(os.path.join(FIXTURE_DIR, "tokenizer.json"))


def write_jsonl(path, texts, column="text"):
    path.write_text("".join(json.dumps({"id": i, column: text}) + "\n" for i, text in enumerate(texts)))
    return str(path)


def in_memory_dataset(texts):
    return Dataset.from_dict({"text": list(texts)})


def official_best_fit(documents, row_capacity, buffer_size, refill_batch_size):
    """The packing loop of the official `cola_dlm/dataloader.py`, on lists, with its buffer refilled in batches."""
    documents = iter(documents)
    doc_buffer = []
    while True:
        row = []
        pos = 0
        while pos < row_capacity:
            while len(doc_buffer) < buffer_size:
                doc_buffer.extend(itertools.islice(documents, refill_batch_size))
            remaining = row_capacity - pos
            best_idx = -1
            best_len = 0
            for i, doc in enumerate(doc_buffer):
                dl = len(doc)
                if dl <= remaining and dl > best_len:
                    best_idx = i
                    best_len = dl
            if best_idx >= 0:
                doc = doc_buffer.pop(best_idx)
                row[pos : pos + len(doc)] = doc
                pos += len(doc)
            else:
                shortest_idx = min(range(len(doc_buffer)), key=lambda i: len(doc_buffer[i]))
                doc = doc_buffer.pop(shortest_idx)
                row[pos : pos + remaining] = doc[:remaining]
                pos += remaining
        yield row


def lettered(lengths):
    """Documents of distinct tokens: document "C" of length 3 is ["C0", "C1", "C2"]."""
    return [[f"{name}{i}" for i in range(length)] for name, length in lengths]


def test_packing_matches_the_hand_worked_example():
    documents = lettered(
        [("A", 5), ("B", 3), ("C", 8), ("D", 2), ("E", 6), ("F", 4), ("G", 13), ("H", 3), ("I", 7), ("J", 2)]
    )
    A, B, C, D, E, F, G, H, I, J = documents
    rows = list(pack_documents(documents, row_length=9, buffer_size=4))
    # Nothing fits the last token of row 0, so the shortest document, D, is cut to it.
    assert rows[:4] == [C + D[:1], E + B, A + F, I + J]
    # G is still buffered after four rows; at the end of the documents the buffer is packed until empty.
    assert rows[4:] == [H + G[:6]]
    # The official loop (refilling two documents at a time, endless documents) gives the same four rows.
    official = official_best_fit(itertools.chain(documents, lettered([("K", 20)] * 10)), 9, 4, 2)
    assert list(itertools.islice(official, 4)) == rows[:4]


def test_packing_breaks_ties_by_buffer_order():
    X, Y, V, W, T = documents = lettered([("X", 3), ("Y", 3), ("V", 6), ("W", 6), ("T", 7)])
    rows = list(itertools.islice(pack_documents(documents, row_length=5, buffer_size=3), 2))
    # The earliest of the longest fitting documents, then the earliest of the shortest ones is cut.
    assert rows == [X + Y[:2], V[:5]]


def test_packing_equals_the_official_loop_on_random_documents():
    rng = random.Random(0)
    documents = [[rng.randrange(1000) for _ in range(rng.randint(1, 40))] for _ in range(3000)]
    ours = list(itertools.islice(pack_documents(documents, row_length=33, buffer_size=50), 500))
    official = list(itertools.islice(official_best_fit(documents, 33, 50, refill_batch_size=1), 500))
    assert ours == official
    assert all(len(row) == 33 for row in ours)


def test_load_text_dataset_reads_txt_jsonl_parquet_and_folders(tmp_path, tokenizer):
    cache = {"cache_dir": str(tmp_path / "cache")}
    # Blank lines of a .txt file are no documents.
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n".join(DOCUMENTS[:5]) + "\n\n" + "\n".join(DOCUMENTS[5:]) + "\n")
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", DOCUMENTS)
    parquet = str(tmp_path / "corpus.parquet")
    pq.write_table(pa.table({"body": DOCUMENTS, "id": list(range(len(DOCUMENTS)))}), parquet)
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "part-0.jsonl", DOCUMENTS[:6])
    write_jsonl(folder / "part-1.jsonl", DOCUMENTS[6:])

    sources = [(str(txt), "text"), (jsonl, "text"), (parquet, "body"), (str(folder), "text")]
    for source, column in sources:
        dataset = load_text_dataset(source, text_column=column, **cache)
        assert list(dataset[column]) == DOCUMENTS, source
        streamed = load_text_dataset(source, text_column=column, streaming=True)
        assert isinstance(streamed, IterableDataset)
        assert [example[column] for example in streamed] == DOCUMENTS, source

    # The same documents give the same packed rows whatever the file.
    expected = list(pack_documents(tokenize_documents(DOCUMENTS, tokenizer), row_length=12, buffer_size=4))
    for source, column in sources:
        dataset = load_text_dataset(source, text_column=column, streaming=True)
        rows = PackedRows(dataset, tokenizer, 12, text_column=column, buffer_size=4, shuffle=False, num_epochs=1)
        assert [row["input_ids"].tolist() for row in rows] == expected, source
        dataset = load_text_dataset(source, text_column=column, **cache)
        rows = PackedRows(dataset, tokenizer, 12, text_column=column, buffer_size=4, shuffle=False, num_epochs=1)
        assert [row["input_ids"].tolist() for row in rows] == expected, source


def test_load_text_dataset_names_the_wrong_argument(tmp_path):
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", DOCUMENTS, column="content")
    for streaming in (False, True):
        with pytest.raises(ValueError, match="`text_column` `text` is not a column.*'content'"):
            load_text_dataset(jsonl, streaming=streaming, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="`source` `.*missing.jsonl` does not exist"):
        load_text_dataset(str(tmp_path / "missing.jsonl"))
    (tmp_path / "corpus.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match="unknown extension `.csv`"):
        load_text_dataset(str(tmp_path / "corpus.csv"))


def test_rows_of_a_real_tokenizer_are_full_and_start_documents_with_bos(tokenizer):
    bos = get_bos_token_id(tokenizer)
    assert bos == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    documents = [[bos, *ids] for ids in tokenizer(DOCUMENTS, add_special_tokens=False)["input_ids"]]
    assert all(bos not in document[1:] for document in documents)

    dataset = in_memory_dataset(DOCUMENTS)
    rows = PackedRows(dataset, tokenizer, row_length=16, buffer_size=5, seed=3)
    batches = torch.utils.data.DataLoader(rows, batch_size=4)
    for batch in itertools.islice(batches, 10):
        assert batch["input_ids"].shape == (4, 16) and batch["input_ids"].dtype == torch.long
        assert torch.equal(batch["attention_mask"], torch.ones(4, 16, dtype=torch.long))
        for row in batch["input_ids"].tolist():
            assert row[0] == bos
            starts = [i for i, token in enumerate(row) if token == bos] + [len(row)]
            pieces = [row[start:end] for start, end in zip(starts, starts[1:])]
            # Every piece is a whole document, but the last of a row may be a cut one.
            assert all(piece in documents for piece in pieces[:-1])
            assert any(document[: len(pieces[-1])] == pieces[-1] for document in documents)


@pytest.mark.parametrize("kind", ["map-style", "streaming, one file", "streaming, two files"])
def test_two_processes_see_disjoint_documents_that_together_are_all(kind, tmp_path, tokenizer):
    texts = [f"document {i}." for i in range(23)]
    if kind == "map-style":
        dataset = load_text_dataset(write_jsonl(tmp_path / "corpus.jsonl", texts), cache_dir=str(tmp_path / "cache"))
    elif kind == "streaming, one file":
        dataset = load_text_dataset(write_jsonl(tmp_path / "corpus.jsonl", texts), streaming=True)
    else:
        write_jsonl(tmp_path / "part-0.jsonl", texts[:11])
        write_jsonl(tmp_path / "part-1.jsonl", texts[11:])
        dataset = load_text_dataset(str(tmp_path), streaming=True)

    def process(index, **kwargs):
        return PackedRows(
            dataset, tokenizer, 8, seed=5, shuffle_buffer_size=8, process_index=index, num_processes=2, **kwargs
        )

    epochs = []
    for epoch in range(2):
        seen = [[example["text"] for example in process(index).shard(epoch)] for index in range(2)]
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == sorted(texts)
        assert min(len(seen[0]), len(seen[1])) >= 10
        epochs.append(seen)
    # Each epoch shuffles the documents anew.
    assert epochs[0] != epochs[1]
    # A process packs the documents of its shard.
    for index in range(2):
        rows = [row["input_ids"].tolist() for row in process(index, num_epochs=1)]
        assert rows == list(pack_documents(tokenize_documents(epochs[0][index], tokenizer), 8, buffer_size=1000))


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("process_index", [0, 1])
def test_resuming_at_row_n_continues_the_uninterrupted_stream(streaming, process_index, tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "corpus.jsonl", DOCUMENTS)
    dataset = load_text_dataset(source, streaming=streaming, cache_dir=str(tmp_path / "cache"))

    def rows(start_row, count):
        packed = PackedRows(
            dataset,
            tokenizer,
            row_length=12,
            buffer_size=4,
            seed=7,
            shuffle_buffer_size=5,
            process_index=process_index,
            num_processes=2,
            start_row=start_row,
        )
        return [row["input_ids"] for row in itertools.islice(packed, count)]

    # 40 rows of 12 tokens are several epochs of half of the documents.
    uninterrupted = rows(0, 40)
    for start_row in (1, 13, 31):
        resumed = rows(start_row, 40 - start_row)
        assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted[start_row:], strict=True))


def test_a_process_without_documents_is_an_error(tokenizer):
    dataset = in_memory_dataset(["one document."])
    with pytest.raises(ValueError, match="`dataset` has 1 documents, fewer than the 2 processes"):
        PackedRows(dataset, tokenizer, 8, process_index=1, num_processes=2)
    rows = PackedRows(dataset.to_iterable_dataset(), tokenizer, 8, process_index=1, num_processes=2)
    with pytest.raises(ValueError, match="Process 1 of 2 has no documents"):
        next(iter(rows))
