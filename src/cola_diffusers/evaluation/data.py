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

"""Benchmark records in the official JSONL format, the built-in demo task, and the original datasets."""

import json
import os

from ..demo import demo_answer, demo_examples, demo_prompt
from .tasks import OFFICIAL_TASKS


DEMO_TASK = "reverse_digits"
TASK_NAMES = (*OFFICIAL_TASKS, DEMO_TASK)
REQUIRED_FIELDS = ("id", "prompt", "ground_truth")


def read_jsonl(path: str | os.PathLike, allow_cut_last_line: bool = False) -> list[dict]:
    """
    The records of a JSONL file, blank lines skipped; the file is only read. With `allow_cut_last_line`, a last
    line left unterminated by a killed writer is left out instead of raising.
    """
    with open(path, encoding="utf-8") as file:
        lines = file.read().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if allow_cut_last_line and number == len(lines):
                break
            raise ValueError(f"{path}, line {number}, is not valid JSON: {error}.") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}, is not a JSON object.")
        records.append(record)
    return records


def check_records(records: list[dict], source: str):
    """
    Raises a `ValueError` naming the first record that lacks `id`, `prompt` or `ground_truth`, whose id is not a
    string or an integer, or whose `prompt` or `few_shot_prefix` is not a string.
    """
    seen = set()
    for index, record in enumerate(records):
        missing = [field for field in REQUIRED_FIELDS if field not in record]
        if missing:
            raise ValueError(f"Record {index} of {source} (id {record.get('id')!r}) has no {missing[0]!r}.")
        if isinstance(record["id"], bool) or not isinstance(record["id"], (int, str)):
            kind = type(record["id"]).__name__
            raise ValueError(f"Record {index} of {source} has an id of type {kind}; ids are strings or integers.")
        for field in ("prompt", "few_shot_prefix"):
            if not isinstance(record.get(field, ""), str):
                kind = type(record[field]).__name__
                raise ValueError(
                    f"Record {index} of {source} (id {record['id']!r}): {field!r} must be a string, not {kind}."
                )
        if record["id"] in seen:
            raise ValueError(f"Record {index} of {source} repeats the id {record['id']!r}; ids must be unique.")
        seen.add(record["id"])


def demo_records() -> list[dict]:
    """The embedded demo model's task: the 500 held-out four-digit strings, answered by their reversal."""
    return [
        {"id": index, "prompt": demo_prompt(digits), "ground_truth": demo_answer(digits)}
        for index, digits in enumerate(demo_examples("held_out"))
    ]


def load_records(task: str, data_dir: str | None, limit: int | None = None) -> list[dict]:
    """
    The records of `task`: `<data_dir>/<task>.jsonl` for the official tasks (records with `id`, `prompt`,
    `ground_truth`, and `few_shot_prefix`, `choices` where the task has them), the built-in set for the demo task.
    """
    if task not in TASK_NAMES:
        raise ValueError(f"Unknown task {task!r}; the tasks are {list(TASK_NAMES)}.")
    if task == DEMO_TASK:
        records, source = demo_records(), "the built-in reverse_digits task"
    else:
        if data_dir is None:
            raise ValueError(f"The task {task!r} needs `--data`, a folder with {task}.jsonl.")
        source = os.path.join(data_dir, f"{task}.jsonl")
        if not os.path.isfile(source):
            raise FileNotFoundError(f"No data file for the task {task!r}: {source} does not exist.")
        records = read_jsonl(source)
        check_records(records, source)
    return records[:limit]


def model_input(record: dict) -> str:
    """The text the model reads: the few-shot prefix, then the record's prompt."""
    return record.get("few_shot_prefix", "") + record["prompt"]


def _lambada(row):
    passage, last_word = row["text"].rsplit(" ", 1)
    return passage, "", None, last_word


def _obqa(row):
    choices = row["choices"]["text"]
    return row["question_stem"], "", choices, choices[row["choices"]["label"].index(row["answerKey"])]


def _race(row):
    # The official records put the question after the article.
    return f"{row['article']} {row['question']}", "", row["options"], row["options"]["ABCD".index(row["answer"])]


def _siqa(row):
    # The official records hold the question alone, without the situation.
    choices = [row["answerA"], row["answerB"], row["answerC"]]
    return row["question"], "", choices, choices[int(row["label"]) - 1]


def _story_cloze(row):
    choices = [row["sentence_quiz1"], row["sentence_quiz2"]]
    story = " ".join(row[f"input_sentence_{index}"] for index in range(1, 5))
    return story, "", choices, choices[row["answer_right_ending"] - 1]


# The original datasets on the Hub (`path`, `name`, `split`) and how a row becomes `(question, context, choices,
# answer)`; our reading of the official records, which ship without the script that made them.
DATASETS = {
    "lambada": ("EleutherAI/lambada_openai", "default", "test", _lambada),
    "mmlu": (
        "cais/mmlu",
        "all",
        "test",
        lambda row: (row["question"], "", row["choices"], row["choices"][row["answer"]]),
    ),
    "obqa": ("allenai/openbookqa", "main", "test", _obqa),
    "hellaswag": (
        "Rowan/hellaswag",
        None,
        "validation",
        lambda row: (row["ctx"], "", row["endings"], row["endings"][int(row["label"])]),
    ),
    "race": ("ehovy/race", "all", "test", _race),
    "siqa": ("allenai/social_i_qa", None, "validation", _siqa),
    "squad": (
        "rajpurkar/squad",
        None,
        "validation",
        lambda row: (row["question"], row["context"], None, row["answers"]["text"][0]),
    ),
    "story_cloze": ("LSDSem/story_cloze", "2016", "validation", _story_cloze),
}


def dataset_records(task: str, limit: int | None = None, **load_kwargs) -> list[dict]:
    """
    Records of an official task built from its original dataset with `datasets.load_dataset` (`load_kwargs`, such
    as `data_dir` for Story Cloze's manual download, are passed on), rendered by the task's template.
    """
    from datasets import load_dataset

    if task not in DATASETS:
        raise ValueError(f"No original dataset for {task!r}; the official tasks are {list(DATASETS)}.")
    path, name, split, fields = DATASETS[task]
    rows = load_dataset(path, name, split=split, **load_kwargs)
    records = []
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            break
        question, context, choices, answer = fields(row)
        few_shot_prefix, prompt = OFFICIAL_TASKS[task].render(question, context, choices)
        record = {"id": index, "prompt": prompt, "few_shot_prefix": few_shot_prefix, "ground_truth": answer}
        if choices is not None:
            record["choices"] = list(choices)
        records.append(record)
    return records
