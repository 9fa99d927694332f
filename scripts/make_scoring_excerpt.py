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
Build `tests/fixtures/official_outputs_excerpt/`: a few dozen records per task of the official benchmark outputs,
hard cases first, and a few made-up replies, each with the verdict of the official scorer.

The verdicts come from running the official `scripts/acc_calc.py` itself (imported from the official repository) on
copies: on all the official outputs for their records, and on the made-up replies, given uncut, for theirs. The
official scorer rewrites what it reads, so it only ever sees copies in a temporary folder.

    python scripts/make_scoring_excerpt.py \
        --official-script ../shared/reference/cola-dlm-official/scripts/acc_calc.py \
        --outputs ../shared/eval/official_outputs
"""

import argparse
import contextlib
import importlib.util
import io
import json
import random
import shutil
import tempfile
from pathlib import Path


TASKS = ("lambada", "mmlu", "obqa", "hellaswag", "race", "siqa", "squad", "story_cloze")
MULTIPLE_CHOICE = ("mmlu", "obqa", "race", "siqa")
KEPT_FIELDS = ("id", "generate", "ground_truth", "choices", "others")
PER_TASK = 36
PER_CASE = 3


def load_official(path: Path):
    """The official scorer as a module, writing no detail files."""
    spec = importlib.util.spec_from_file_location("official_acc_calc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.WRITE_DETAIL_FILES = False
    return module


def run_official(official, folder: Path) -> tuple[dict, dict]:
    """`(accuracy per task, {task: {id: verdict}})` of the official scorer on `folder` (which it rewrites)."""
    with contextlib.redirect_stdout(io.StringIO()):
        accuracies, _, verdicts, _ = official.evaluate_single_directory(str(folder))
    return (
        {name.removesuffix(".jsonl"): value for name, value in accuracies.items() if value is not None},
        {name.removesuffix(".jsonl"): value for name, value in verdicts.items()},
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def multiple_choice_cases(official, record: dict) -> list[str]:
    """The hard cases a multiple-choice record shows."""
    generate, choices = record["generate"], record["choices"]
    segment = official.extract_answer_segment(generate)
    names = [official.normalize_text(choice) for choice in choices]
    text = official.normalize_text(generate)
    best = max(official.calculate_similarity(generate, choice) for choice in choices)
    predicted = official.extract_mmlu_choice_letter(generate, choices)
    reference = official.extract_gt_mmlu_choice_letter(record["ground_truth"], choices)
    cases = {
        "letter": bool(official.extract_choice_letter(segment, len(choices))),
        "bracketed": "(" in generate or "[" in generate,
        "text_equal": text in names and generate.strip() != record["ground_truth"],
        "contained_one": sum(bool(name) and name in text for name in names) == 1 and text not in names,
        "contained_many": sum(bool(name) and name in text for name in names) > 1,
        "similar_above": 0.9 <= best < 1.0,
        "similar_below": 0.8 <= best < 0.9,
        "other_choice": bool(predicted) and predicted != reference,
        "empty": not text,
    }
    return [name for name, present in cases.items() if present]


def lambada_cases(official, record: dict) -> list[str]:
    """The hard cases a LAMBADA record shows."""
    generate, truth = record["generate"], record["ground_truth"]
    words = generate.split()
    first = words[0] if words else ""
    cases = {
        "punctuated_word": first != official.get_first_word(generate) and first.lower() != first,
        "punctuation_first": bool(first) and not first[0].isalnum(),
        "apostrophe": "'" in first or "’" in first,
        "no_word": not official.get_first_word(generate),
        "truth_punctuated": truth.strip() != official.normalize_text(truth),
        "same_first_word": official.get_first_word(generate) == official.get_first_word(truth)
        and first != truth.strip(),
    }
    return [name for name, present in cases.items() if present]


def similarity_cases(official, record: dict) -> list[str]:
    """The hard cases of a task scored by exact match of the normalised texts."""
    generate, truth = record["generate"], record["ground_truth"]
    ratio = official.calculate_similarity(generate, truth)
    cases = {
        "equal_normalised": ratio == 1.0 and generate.strip() != truth.strip(),
        "equal": generate.strip() == truth.strip(),
        "near": 0.85 <= ratio < 1.0,
        "empty": not official.normalize_text(generate),
    }
    return [name for name, present in cases.items() if present]


def common_cases(record: dict) -> list[str]:
    return [
        name
        for name, present in {"multiline": "\n" in record["generate"], "uncut": "others" not in record}.items()
        if present
    ]


def select(official, task: str, records: list[dict], verdicts: dict, rng: random.Random) -> list[dict]:
    """Up to `PER_CASE` records per hard case, then right and wrong ones at random, `PER_TASK` in all."""
    cases_of = {"lambada": lambada_cases, **dict.fromkeys(MULTIPLE_CHOICE, multiple_choice_cases)}
    cases_of = cases_of.get(task, similarity_cases)
    by_case: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        for case in cases_of(official, record) + common_cases(record):
            by_case.setdefault(case, []).append(index)
    chosen: list[int] = []
    for case, indices in sorted(by_case.items()):
        fresh = [index for index in indices if index not in chosen]
        chosen += rng.sample(fresh, min(PER_CASE, len(fresh)))
    for wanted in (True, False):
        pool = [index for index, record in enumerate(records) if verdicts[record["id"]] is wanted]
        pool = [index for index in pool if index not in chosen]
        chosen += rng.sample(pool, max(0, min(len(pool), (PER_TASK - len(chosen)) // (2 if wanted else 1))))
    return [records[index] for index in sorted(chosen)]


def synthetic_replies(official, base: dict) -> list[str]:
    """Made-up raw replies to a record whose answer is (B): letter spellings, texts, cuts and near misses."""
    answer = base["choices"][1]
    replies = [
        " (B)",
        " B",
        "B",
        " B)",
        " b.",
        " [b]",
        "( B )",
        " Answer: B",
        " answer is b",
        " The answer is (B).",
        " Final answer: (B)",
        " Option B",
        " choice: b,",
        " I pick (B) here",
        " (B) " + base["choices"][0],
        " I pick (B), as the others cannot be right at all",
        " (E)",
        " E",
        " A",
        " (A)",
        " Answer: A",
        " B\nQuestion: next one",
        "\n\n(B)\nQuestion: next one",
        " \n(B) \n) more",
        " I think\nAnswer: B",
        "",
        "   ",
        "\n\n",
        " \n ",
        " Answer: " + answer,
        " " + answer.upper() + "!",
        " the correct answer is " + answer,
        " " + answer + " and more words",
        " " + answer + "\n(C) " + base["choices"][2],
    ]
    # Near misses around the 0.9 similarity of the official text fallback: characters of the answer replaced (by x)
    # or dropped; the closest below 0.9, exactly 0.9 if there is one, and the closest above.
    text = official.normalize_text(answer)
    ratios = {}
    for start in range(len(text)):
        for replaced in range(4):
            for dropped in range(4):
                variant = text[:start] + "x" * replaced + text[start + replaced + dropped :]
                ratios.setdefault(official.calculate_similarity(variant, answer), variant)
    below, above = max(ratio for ratio in ratios if ratio < 0.9), min(ratio for ratio in ratios if ratio > 0.9)
    replies += [" " + ratios[ratio] for ratio in (below, 0.9, above) if ratio in ratios]
    return replies


def synthetic_lambada(truth: str) -> list[str]:
    word = truth.strip()
    return [
        f" {word}.",
        f" {word.capitalize()},",
        f' "{word}"',
        f"—{word}",
        f" {word}'s",
        f" {word}-like",
        f"\n\n{word}\nmore",
        f" ({word})",
        " ...",
        "",
        f" {word[:-1]}",
        f" {word}s",
        f" {word} and more",
        f"'{word}",
    ]


def build_synthetic(official, folder: Path, outputs: Path) -> tuple[dict, dict]:
    """Made-up replies to real records, cut and judged by the official scorer: `({task: records}, verdicts)`."""
    bases = {"obqa": 0, "mmlu": 512, "lambada": 1}
    records = {}
    for task, base_id in bases.items():
        base = next(record for record in read_jsonl(outputs / f"{task}.jsonl") if record["id"] == base_id)
        base = {key: base[key] for key in ("ground_truth", "choices") if key in base}
        replies = synthetic_lambada(base["ground_truth"]) if task == "lambada" else synthetic_replies(official, base)
        records[task] = [
            {"id": f"synthetic-{index}", "generate": reply, **base} for index, reply in enumerate(replies)
        ]
        if task == "obqa":
            # The reference given as a letter rather than as the choice's text.
            records[task] += [
                {**record, "id": f"{record['id']}-letter", "ground_truth": "(B)"} for record in records[task][:3]
            ]
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records[task])
        (folder / f"{task}.jsonl").write_text(lines, encoding="utf-8")
    _, verdicts = run_official(official, folder)
    return {task: read_jsonl(folder / f"{task}.jsonl") for task in bases}, verdicts


def excerpt_record(record: dict, verdict: bool, synthetic: bool = False) -> dict:
    kept = {key: record[key] for key in KEPT_FIELDS if key in record}
    return {**kept, "expected_correct": verdict, **({"synthetic": True} if synthetic else {})}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-script", type=Path, required=True, help="The official scripts/acc_calc.py.")
    parser.add_argument("--outputs", type=Path, required=True, help="The official outputs, <task>.jsonl.")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "tests/fixtures/official_outputs_excerpt"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    official = load_official(args.official_script)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as temporary:
        full, made_up = Path(temporary, "tasks_official"), Path(temporary, "tasks_synthetic")
        shutil.copytree(args.outputs, full, ignore=shutil.ignore_patterns("*.csv"))
        for path in full.iterdir():
            path.chmod(0o644)
        full.chmod(0o755)
        made_up.mkdir()
        accuracies, verdicts = run_official(official, full)
        synthetic, synthetic_verdicts = build_synthetic(official, made_up, args.outputs)
        args.out.mkdir(parents=True, exist_ok=True)
        for task in TASKS:
            records = read_jsonl(args.outputs / f"{task}.jsonl")
            chosen = select(official, task, records, verdicts[task], rng)
            lines = [excerpt_record(record, verdicts[task][record["id"]]) for record in chosen]
            lines += [
                excerpt_record(record, synthetic_verdicts[task][record["id"]], True)
                for record in synthetic.get(task, [])
            ]
            text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
            (args.out / f"{task}.jsonl").write_text(text, encoding="utf-8")
            right = sum(line["expected_correct"] for line in lines)
            print(f"{task}: official accuracy {accuracies[task]:.2f} | excerpt {len(lines)} records, {right} right")
    print(f"average {sum(accuracies.values()) / len(accuracies):.2f}")


if __name__ == "__main__":
    main()
