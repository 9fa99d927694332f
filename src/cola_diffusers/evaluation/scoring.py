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
Scoring of benchmark outputs, verdict for verdict the official `scripts/acc_calc.py`.

Unlike the official script, nothing here rewrites the outputs: the official cut of `generate` at its first line is
applied on reading, and it is idempotent, so records the official script has already cut score the same.
"""

import csv
import difflib
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .data import read_jsonl


SUMMARY_NAME = "accuracy_summary.csv"

# The official multiple-choice text fallback: the closest choice counts if its similarity reaches this.
CHOICE_SIMILARITY = 0.9

# At most this many letters (A-Z) name a choice.
MAX_CHOICES = 26

# A bare letter reply: `B`, `(B)`, `[b]`, `B)`, `b.`.
_BARE_LETTER = re.compile(r"[\(\[]?\s*([A-Za-z])\s*[\)\]]?\.?")
# A letter after a keyword: `Answer: B`, `the answer is (C).`, `option d`.
_KEYWORD_LETTER = re.compile(
    r"(?i)\b(?:final\s+answer|answer|option|choice)\b\s*(?:is|=|:|：)?\s*[\(\[]?\s*([A-Za-z])\s*[\)\]]?(?=\s|$|[.,;:!?])"
)
# A bracketed letter anywhere in a short reply: `I pick (B)`.
_BRACKETED_LETTER = re.compile(r"[\(\[]\s*([A-Za-z])\s*[\)\]]")
# The official bound on "short" for bracketed letters, in characters.
_BRACKETED_MAX_LENGTH = 40
# A line giving the answer after a keyword; the answer is what follows.
_ANSWER_LINE = re.compile(r"(?i)\b(?:final\s+answer|answer)\b\s*(?:is|=|:|：)?\s*(.+)$")
# A leading `The correct answer is`, dropped before matching a reply against the choices' texts.
_ANSWER_PREFIX = re.compile(r"(?i)^(the\s+)?(correct\s+)?(final\s+)?(answer|option|choice)\b\s*(is|=|:|：)?\s*")


def first_line(generate: str) -> str:
    """The official cut: `generate` up to its first newline preceded by a word character (all of it without one)."""
    word = re.search(r"\w", generate)
    if word is None:
        return generate
    end = generate.find("\n", word.end())
    return generate if end == -1 else generate[:end]


def _text(value) -> str:
    """A field as text, `None` as empty."""
    return "" if value is None else str(value)


def normalize(text) -> str:
    """Lower case, no punctuation, single spaces."""
    text = re.sub(r"[^\w\s]", "", _text(text).lower().strip())
    return " ".join(text.split())


def similarity(text, other) -> float:
    """The `difflib` ratio of the normalised texts; 1.0 when both are empty."""
    text, other = normalize(text), normalize(other)
    if not text and not other:
        return 1.0
    return difflib.SequenceMatcher(None, text, other).ratio()


def _first_word(text) -> str:
    """The first normalised word, `""` for none."""
    words = normalize(text).split()
    return words[0] if words else ""


def _answer_segment(text: str) -> str:
    """What follows `Answer:` on the last line that has one, else the stripped text."""
    text = text.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ANSWER_LINE.search(line)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return text


def _last_letter(letters: list[str], count: int) -> str:
    """The last of the letters found, upper case, if it names one of `count` choices, else `""`."""
    letter = letters[-1].upper() if letters else ""
    return letter if letter and ord(letter) - ord("A") < count else ""


def _choice_by_letter(text: str, count: int) -> str:
    """The choice letter a reply spells out: as a bare letter, after a keyword, or bracketed in a short reply."""
    text = text.strip()
    if not text:
        return ""
    bare = _BARE_LETTER.fullmatch(text)
    letter = _last_letter([bare.group(1)] if bare else [], count) or _last_letter(_KEYWORD_LETTER.findall(text), count)
    if not letter and len(text) <= _BRACKETED_MAX_LENGTH:
        letter = _last_letter(_BRACKETED_LETTER.findall(text), count)
    return letter


def _choice_by_text(text: str, choices: list) -> str:
    """
    The letter of the choice whose text a reply gives: equal once normalised (as is, then without a leading `The
    answer is`), the only choice it contains, or the most similar choice at `CHOICE_SIMILARITY` or more.
    """
    if not choices or not normalize(text):
        return ""
    names = [normalize(choice) for choice in choices]
    if normalize(text) in names:
        return chr(65 + names.index(normalize(text)))
    cleaned = _ANSWER_PREFIX.sub("", text).strip()
    reply = normalize(cleaned)
    if not reply:
        return ""
    if reply in names:
        return chr(65 + names.index(reply))
    contained = [index for index, name in enumerate(names) if name and name in reply]
    if len(contained) == 1:
        return chr(65 + contained[0])
    scores = [similarity(cleaned, choice) for choice in choices]
    best = max(scores)
    return chr(65 + scores.index(best)) if best >= CHOICE_SIMILARITY else ""


def predicted_choice(generate: str, choices: list) -> str:
    """The letter a reply picks (`""` for none): from its `Answer:` segment first, then from all of it."""
    count = min(len(choices), MAX_CHOICES)
    if count == 0:
        return ""
    for candidate in (_answer_segment(generate), generate):
        letter = _choice_by_letter(candidate, count) or _choice_by_text(candidate, choices)
        if letter:
            return letter
    return ""


def reference_choice(ground_truth: str, choices: list) -> str:
    """The letter the reference answer names, by letter or by text."""
    count = min(len(choices), MAX_CHOICES)
    if count == 0:
        return ""
    return _choice_by_letter(ground_truth, count) or _choice_by_text(ground_truth, choices)


def _score_first_word(generate: str, ground_truth: str, choices: list) -> float:
    """LAMBADA: the first normalised word only."""
    return float(_first_word(generate) == _first_word(ground_truth))


def _score_choice(generate: str, ground_truth: str, choices: list) -> float:
    """Multiple choice: the same choice letter, else the similarity of the texts."""
    letter = predicted_choice(generate, choices)
    if letter and letter == reference_choice(ground_truth, choices):
        return 1.0
    return similarity(generate, ground_truth)


def _score_similarity(generate: str, ground_truth: str, choices: list) -> float:
    return similarity(generate, ground_truth)


def _score_exact_line(generate: str, ground_truth: str, choices: list) -> float:
    """The demo task: the stripped first line is the answer."""
    return float(generate.strip() == ground_truth.strip())


@dataclass(frozen=True)
class TaskRule:
    """
    How a task's records are judged: correct when `score(generate, ground_truth, choices)` reaches `threshold`.

    Args:
        score (`Callable[[str, str, list], float]`): The score of the cut reply, in [0, 1].
        threshold (`float`): The score a correct record reaches.
    """

    score: Callable[[str, str, list], float]
    threshold: float = 1.0


# The official tasks in the official order (their thresholds: all 1.0), then the embedded demo task.
TASK_RULES = {
    "lambada": TaskRule(_score_first_word),
    "mmlu": TaskRule(_score_choice),
    "obqa": TaskRule(_score_choice),
    "hellaswag": TaskRule(_score_similarity),
    "race": TaskRule(_score_choice),
    "siqa": TaskRule(_score_choice),
    "squad": TaskRule(_score_similarity),
    "story_cloze": TaskRule(_score_similarity),
    "reverse_digits": TaskRule(_score_exact_line),
}

DISPLAY_NAMES = {
    "lambada": "LAMBADA",
    "mmlu": "MMLU",
    "obqa": "OBQA",
    "hellaswag": "HellaSwag",
    "race": "RACE",
    "siqa": "SIQA",
    "squad": "SQuAD",
    "story_cloze": "Story Cloze",
    "reverse_digits": "Reverse digits",
}


def _rule(task: str) -> TaskRule:
    if task not in TASK_RULES:
        raise ValueError(f"Unknown task {task!r}; the tasks scored are {', '.join(TASK_RULES)}.")
    return TASK_RULES[task]


def is_correct(task: str, record: Mapping) -> bool:
    """The official verdict on one record (`generate`, `ground_truth`, optional `choices`); `generate` is cut first."""
    rule = _rule(task)
    for field in ("generate", "ground_truth"):
        if field not in record:
            raise ValueError(f"Record {record.get('id')!r} of task {task!r} has no {field!r} field.")
    generate = record["generate"]
    # As the official script: only text is cut, anything else is read as its `str` (`None` as empty).
    generate = first_line(generate) if isinstance(generate, str) else _text(generate)
    return rule.score(generate, _text(record["ground_truth"]), list(record.get("choices") or [])) >= rule.threshold


@dataclass(frozen=True)
class TaskScore:
    """
    A task's accuracy, per noise seed and over seeds.

    Args:
        task (`str`): The task's name.
        per_seed (`dict[int | None, float]`): Accuracy in percent per seed (`None`: records without a seed).
        num_records (`int`): Records scored, all seeds together.
        num_correct (`int`): Records judged correct, all seeds together.
    """

    task: str
    per_seed: dict[int | None, float]
    num_records: int
    num_correct: int

    @property
    def accuracy(self) -> float:
        """The mean accuracy over seeds, in percent."""
        return sum(self.per_seed.values()) / len(self.per_seed)

    @property
    def stderr(self) -> float | None:
        """The standard error of the mean over seeds, in percent; `None` with one seed."""
        return _stderr(list(self.per_seed.values()))


def _stderr(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def _seed(record: Mapping) -> int | None:
    seed = record.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"Record {record.get('id')!r} has seed {seed!r}; a seed is an integer.")
    return seed


def score_records(task: str, records: Iterable[Mapping]) -> TaskScore:
    """Score a task's records, grouped by their `seed` field (all together when none has one)."""
    _rule(task)
    counts: dict[int | None, tuple[int, int]] = {}
    for record in records:
        seed = _seed(record)
        correct, total = counts.get(seed, (0, 0))
        counts[seed] = (correct + is_correct(task, record), total + 1)
    if not counts:
        raise ValueError(f"No records to score for task {task!r}.")
    if None in counts and len(counts) > 1:
        raise ValueError(f"Some records of task {task!r} have a seed and some do not.")
    return TaskScore(
        task=task,
        per_seed={seed: correct / total * 100 for seed, (correct, total) in sorted(counts.items(), key=_seed_order)},
        num_records=sum(total for _, total in counts.values()),
        num_correct=sum(correct for correct, _ in counts.values()),
    )


def _seed_order(item: tuple) -> int:
    return -1 if item[0] is None else item[0]


def score_directory(folder: str | os.PathLike) -> dict[str, TaskScore]:
    """Score every `<task>.jsonl` of a folder, in the official task order; the files are only read."""
    folder = Path(folder)
    paths = {task: folder / f"{task}.jsonl" for task in TASK_RULES}
    scores = {task: score_records(task, read_jsonl(path)) for task, path in paths.items() if path.is_file()}
    if not scores:
        names = ", ".join(path.name for path in paths.values())
        raise FileNotFoundError(f"No task outputs in {folder}: expected one or more of {names}.")
    return scores


def tasks_average(scores: Mapping[str, TaskScore]) -> float:
    """The plain mean of the tasks' accuracies (unrounded, as the official summary)."""
    return sum(score.accuracy for score in scores.values()) / len(scores)


def _seeds(scores: Mapping[str, TaskScore]) -> list[int]:
    """The seeds of the summary's columns: none unless a task has several."""
    if all(len(score.per_seed) < 2 for score in scores.values()):
        return []
    return sorted({seed for score in scores.values() for seed in score.per_seed if seed is not None})


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _summary_rows(scores: Mapping[str, TaskScore]) -> list[list[str]]:
    seeds = _seeds(scores)
    rows = [["task", "accuracy"] + (["stderr"] + [f"seed_{seed}" for seed in seeds] if seeds else [])]
    for task, score in scores.items():
        row = [task, _percent(score.accuracy)]
        if seeds:
            row += [_percent(score.stderr)] + [_percent(score.per_seed.get(seed)) for seed in seeds]
        rows.append(row)
    average = ["tasks_average", _percent(tasks_average(scores))]
    if seeds:
        # Per seed, the average over tasks, when every task ran that seed; the spread of those, when all did.
        per_seed = {seed: [score.per_seed.get(seed) for score in scores.values()] for seed in seeds}
        per_seed = {seed: None if None in values else sum(values) / len(values) for seed, values in per_seed.items()}
        complete = None not in per_seed.values()
        average += [_percent(_stderr(list(per_seed.values())) if complete else None)]
        average += [_percent(value) for value in per_seed.values()]
    rows.append(average)
    return rows


def write_summary(folder: str | os.PathLike, scores: Mapping[str, TaskScore]) -> Path:
    """Write `accuracy_summary.csv` (task, accuracy in percent, then `tasks_average`) to a folder, atomically."""
    if not scores:
        raise ValueError("No task scores to summarise.")
    path = Path(folder) / SUMMARY_NAME
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{SUMMARY_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as file:
            csv.writer(file).writerows(_summary_rows(scores))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def format_table(scores: Mapping[str, TaskScore]) -> str:
    """An aligned text table of the scores: task, accuracy (± stderr over seeds), records."""
    spread = any(len(score.per_seed) > 1 for score in scores.values())
    rows = [["task", "accuracy", "± stderr", "seeds", "records"] if spread else ["task", "accuracy", "records"]]
    for task, score in scores.items():
        row = [DISPLAY_NAMES.get(task, task), f"{score.accuracy:.2f}"]
        if spread:
            row += [f"± {score.stderr:.2f}" if score.stderr is not None else "", str(len(score.per_seed))]
        rows.append(row + [str(score.num_records)])
    if scores:
        average = ["average", f"{tasks_average(scores):.2f}"]
        rows.append(average + ([""] * 3 if spread else [""]))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
