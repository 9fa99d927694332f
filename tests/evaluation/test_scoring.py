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

"""The scorer gives the official `scripts/acc_calc.py` verdicts, cuts replies itself and never rewrites its inputs."""

import csv
import hashlib
import json
import math
import os
import shutil

import pytest

from cola_diffusers.evaluation.scoring import (
    TASK_RULES,
    first_line,
    format_table,
    is_correct,
    score_directory,
    score_records,
    write_summary,
)

from ..conftest import FIXTURES, REPO_ROOT


EXCERPT_DIR = str(FIXTURES / "official_outputs_excerpt")
OFFICIAL_OUTPUTS = os.path.join(REPO_ROOT, "..", "shared", "eval", "official_outputs")
OFFICIAL_TASKS = ("lambada", "mmlu", "obqa", "hellaswag", "race", "siqa", "squad", "story_cloze")
# The official accuracy_summary.csv of the released outputs.
OFFICIAL_ACCURACY = {
    "lambada": "50.80",
    "mmlu": "19.30",
    "obqa": "23.00",
    "hellaswag": "10.70",
    "race": "19.60",
    "siqa": "28.90",
    "squad": "30.90",
    "story_cloze": "30.77",
}


def read_excerpt(task):
    with open(os.path.join(EXCERPT_DIR, f"{task}.jsonl"), encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def hashes(folder):
    return {
        name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest() for name in os.listdir(folder)
    }


def copy_excerpt(tmp_path):
    folder = tmp_path / "outputs"
    shutil.copytree(EXCERPT_DIR, folder, ignore=shutil.ignore_patterns("README.md"))
    folder.chmod(0o755)
    return folder


def digits(answer, ground_truth, seed=None):
    record = {"id": f"{ground_truth}-{answer}", "generate": answer, "ground_truth": ground_truth}
    return record if seed is None else {**record, "seed": seed}


def test_task_rules_in_official_order():
    assert tuple(TASK_RULES) == (*OFFICIAL_TASKS, "reverse_digits")


@pytest.mark.parametrize("task", OFFICIAL_TASKS)
def test_excerpt_verdicts_are_the_official_ones(task):
    records = read_excerpt(task)
    assert len(records) >= 30 and {record["expected_correct"] for record in records} == {True, False}
    wrong = [record["id"] for record in records if is_correct(task, record) != record["expected_correct"]]
    assert not wrong, f"{task}: verdicts differ from the official scorer's on {wrong}"


@pytest.mark.parametrize("task", OFFICIAL_TASKS)
def test_raw_replies_score_as_their_cut(task):
    # The official scorer cut `generate` at the newline it split on: the raw reply is `generate + "\n" + others`.
    for record in read_excerpt(task):
        raw = record["generate"] + "\n" + record["others"] if "others" in record else record["generate"]
        assert first_line(raw) == record["generate"]
        assert first_line(first_line(raw)) == first_line(raw)
        assert is_correct(task, {**record, "generate": raw}) == record["expected_correct"], record["id"]


def test_first_line_cuts_after_the_first_word():
    assert first_line(" B\nQuestion: next") == " B"
    assert first_line("\n\n(B)\nmore\nlines") == "\n\n(B)"
    assert first_line(" \n(B) \n) more") == " \n(B) "
    assert first_line(' "\n.\nword') == ' "\n.\nword'
    assert first_line("\n \n") == "\n \n"
    assert first_line("no newline") == "no newline"
    assert first_line("") == ""


def test_made_up_replies_cover_the_hard_cases():
    made_up = {
        record["generate"]: record["expected_correct"] for record in read_excerpt("obqa") if "synthetic" in record
    }
    for spelling in (" (B)", " B", " B)", " b.", " [b]", " Answer: B", " The answer is (B).", " Option B"):
        assert made_up[spelling] is True, spelling
    assert made_up[" I think"] is False  # `Answer: B` on the next line is cut off
    assert made_up[""] is False and made_up["   "] is False
    # Near misses of the text fallback: similarity 0.8947 (no), exactly 0.9 (yes).
    assert made_up[" quit eating lunch "] is False and made_up[" xt eating lunch out"] is True


def test_score_directory_and_summary_leave_inputs_unchanged(tmp_path):
    folder = copy_excerpt(tmp_path)
    before = hashes(folder)
    scores = score_directory(folder)
    path = write_summary(folder, scores)
    assert path == folder / "accuracy_summary.csv"
    after = hashes(folder)
    assert after.pop("accuracy_summary.csv") and after == before  # and no temporary file left behind

    assert list(scores) == list(OFFICIAL_TASKS)
    expected = {}
    for task in OFFICIAL_TASKS:
        verdicts = [record["expected_correct"] for record in read_excerpt(task)]
        expected[task] = sum(verdicts) / len(verdicts) * 100
        assert scores[task].num_records == len(verdicts) and scores[task].stderr is None
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["task", "accuracy"]
    assert rows[1:-1] == [[task, f"{accuracy:.2f}"] for task, accuracy in expected.items()]
    assert rows[-1] == ["tasks_average", f"{sum(expected.values()) / len(expected):.2f}"]
    assert "Story Cloze" in format_table(scores) and "±" not in format_table(scores)


def test_seeds_give_mean_and_standard_error(tmp_path):
    records = [digits("12", "12", 0), digits("34", "34", 0), digits("56", "56", 0), digits("7", "78", 0)]
    records += [digits("21", "12", 1), digits("34\n99", "34", 1), digits("56", "56", 1), digits("87", "78", 1)]
    score = score_records("reverse_digits", records)
    assert score.per_seed == {0: 75.0, 1: 50.0} and score.num_records == 8
    assert score.accuracy == 62.5
    assert score.stderr == pytest.approx(math.sqrt(((75 - 62.5) ** 2 + (50 - 62.5) ** 2) / 1 / 2))

    single = score_records("reverse_digits", [digits(" 12 ", "12"), digits("1", "12")])
    assert single.per_seed == {None: 50.0} and single.stderr is None

    path = write_summary(
        tmp_path, {"reverse_digits": score, "lambada": score_records("lambada", [digits("a", "a", 0)])}
    )
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["task", "accuracy", "stderr", "seed_0", "seed_1"]
    assert rows[1] == ["reverse_digits", "62.50", "12.50", "75.00", "50.00"]
    assert rows[2] == ["lambada", "100.00", "", "100.00", ""]
    assert rows[3] == ["tasks_average", "81.25", "", "87.50", ""]
    assert "± 12.50" in format_table({"reverse_digits": score})


def test_average_is_of_unrounded_accuracies(tmp_path):
    # As the official summary: (0 + 33.333...) / 2 = 16.67, where the rounded 0.00 and 33.33 would give 16.66.
    lambada = score_records("lambada", [digits("a", "b")])
    reverse = score_records("reverse_digits", [digits("1", "1"), digits("1", "2"), digits("1", "3")])
    with open(write_summary(tmp_path, {"lambada": lambada, "reverse_digits": reverse}), newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [["task", "accuracy"], ["lambada", "0.00"], ["reverse_digits", "33.33"], ["tasks_average", "16.67"]]


def test_reverse_digits_is_exact_on_the_first_line():
    assert is_correct("reverse_digits", digits(" 4321 \nmore", "4321"))
    assert not is_correct("reverse_digits", digits("4321.", "4321"))
    assert not is_correct("reverse_digits", digits("", "4321"))


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown task 'gsm8k'.*lambada.*reverse_digits"):
        is_correct("gsm8k", digits("1", "1"))
    with pytest.raises(ValueError, match="Unknown task 'gsm8k'"):
        score_records("gsm8k", [digits("1", "1")])
    with pytest.raises(ValueError, match="Record 7 .*'ground_truth'"):
        is_correct("squad", {"id": 7, "generate": "x"})
    with pytest.raises(ValueError, match="Record 8 .*'generate'"):
        score_records("mmlu", [{"id": 8, "ground_truth": "x", "choices": ["x"]}])
    with pytest.raises(ValueError, match="a seed and some do not"):
        score_records("reverse_digits", [digits("1", "1", 0), digits("1", "1")])
    with pytest.raises(ValueError, match="No records"):
        score_records("squad", [])
    (tmp_path / "notes.jsonl").write_text('{"generate": "x", "ground_truth": "x"}\n')
    with pytest.raises(FileNotFoundError, match="No task outputs.*lambada.jsonl"):
        score_directory(tmp_path)
    (tmp_path / "squad.jsonl").write_text('{"id": 1, "generate": "x", "ground_truth": "x"}\n{"id": 2,\n')
    with pytest.raises(ValueError, match="squad.jsonl, line 2, is not valid JSON"):
        score_directory(tmp_path)


@pytest.mark.skipif(not os.path.isdir(OFFICIAL_OUTPUTS), reason="the official outputs are not next to the repository")
def test_all_official_outputs_give_the_official_summary(tmp_path):
    folder = tmp_path / "outputs"
    shutil.copytree(OFFICIAL_OUTPUTS, folder, ignore=shutil.ignore_patterns("*.csv"))
    folder.chmod(0o755)  # the shared copy may be read-only
    before = hashes(folder)
    scores = score_directory(folder)
    write_summary(folder, scores)
    assert sum(score.num_records for score in scores.values()) == 6968
    with open(folder / "accuracy_summary.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [["task", "accuracy"], *map(list, OFFICIAL_ACCURACY.items()), ["tasks_average", "26.75"]]
    after = hashes(folder)
    assert after.pop("accuracy_summary.csv") and after == before
