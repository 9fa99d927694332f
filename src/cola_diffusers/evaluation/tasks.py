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

"""The official benchmark's prompt templates, as the official inference driver renders them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """
    A benchmark task's prompt. `template` is formatted with `context`, `question` and `choices` (the lettered
    choice lines); the text before its first field is the few-shot prefix, the same for every record.

    Args:
        name (`str`): The task's name, also its file name (`<name>.jsonl`).
        template (`str`): The prompt template.
        multiple_choice (`bool`): Whether records have `choices`; their `ground_truth` is the right choice's text.
    """

    name: str
    template: str
    multiple_choice: bool = True

    @property
    def few_shot_prefix(self) -> str:
        return self.template[: self.template.index("{")]

    def render(self, question: str, context: str = "", choices: list[str] | None = None) -> tuple[str, str]:
        """`(few_shot_prefix, prompt)` of one record; the model reads `few_shot_prefix + prompt`."""
        lines = "\n".join(f"({chr(65 + index)}) {choice}" for index, choice in enumerate(choices or []))
        text = self.template.format(context=context, question=question, choices=lines)
        return self.few_shot_prefix, text[len(self.few_shot_prefix) :]


# Two solved examples, then the record: the official `apply_prompt_template` of `cola_dlm/inference.py`.
OFFICIAL_TASKS = {
    task.name: task
    for task in [
        Task("lambada", "{question}", multiple_choice=False),
        Task(
            "mmlu",
            "Question: Which gas do plants absorb from the air during photosynthesis?\n(A) Oxygen\n"
            "(B) Carbon dioxide\n(C) Nitrogen\n(D) Hydrogen\nAnswer: Carbon dioxide\n\n"
            "Question: A triangle has angles 50 degrees and 60 degrees. What is the third angle?\n(A) 60 degrees\n"
            "(B) 70 degrees\n(C) 80 degrees\n(D) 90 degrees\nAnswer: 70 degrees\n\n"
            "Question: {question}\n{choices}\nAnswer:",
        ),
        Task(
            "obqa",
            "Question: Which tool is best for tightening a screw?\n(A) spoon\n(B) hammer\n(C) screwdriver\n"
            "(D) paintbrush\nAnswer: screwdriver\n\n"
            "Question: What do plants absorb from the air during photosynthesis?\n(A) carbon dioxide\n(B) oxygen\n"
            "(C) helium\n(D) salt\nAnswer: carbon dioxide\n\n"
            "Question: {question}\n{choices}\nAnswer:",
        ),
        Task(
            "hellaswag",
            "Context: The girl puts the bread into the toaster and pushes the lever down. The bread\n"
            "(A) becomes a slice of pizza.\n(B) starts to toast and turn brown.\n(C) disappears immediately.\n"
            "(D) turns into a glass of water.\nAnswer: starts to toast and turn brown.\n\n"
            "Context: The goalkeeper sees the ball coming towards the net. He dives and\n"
            "(A) catches the ball with his hands.\n(B) starts dancing in the field.\n"
            "(C) opens a laptop to check email.\n(D) runs away from the stadium.\n"
            "Answer: catches the ball with his hands.\n\n"
            "Context: {question}\n{choices}\nAnswer:",
        ),
        Task(
            "race",
            "Read the following article and answer the question.\n\n"
            "Article: Mary went to the store to buy some fruits. She bought five apples and two oranges. She paid 5 "
            "dollars in total. What did Mary buy?\nOptions:\n(A) Bananas\n(B) Apples and oranges\n(C) Grapes\n"
            "(D) Watermelon\nAnswer: Apples and oranges\n\n"
            "Article: {question}\nOptions:\n{choices}\nAnswer:",
        ),
        Task(
            "siqa",
            "Question: Jordan wanted to tell a joke to his friends. What does Jordan need to do before this?\n"
            "(A) ignore his friends\n(B) think of a funny story\n(C) leave the room\n"
            "Answer: think of a funny story\n\n"
            "Question: Kai helped his neighbor carry heavy groceries inside. How would the neighbor feel?\n(A) angry\n"
            "(B) grateful\n(C) scared\nAnswer: grateful\n\n"
            "Question: {question}\n{choices}\nAnswer:",
        ),
        Task(
            "squad",
            "Context: The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the "
            "10th and 11th centuries gave their name to Normandy, a region in France. They were descended from Norse "
            "raiders and pirates from Denmark, Iceland and Norway.\nQuestion: In what country is Normandy located?\n"
            "Answer: France\n\n"
            "Context: {context}\nQuestion: {question}\nAnswer:",
            multiple_choice=False,
        ),
        Task(
            "story_cloze",
            "Story: I wanted to make an omelet. I cracked two eggs into a bowl and whisked them. Then I poured them "
            "into a hot pan.\n(A) I ate a delicious omelet for breakfast.\n(B) I decided to order a pizza instead.\n"
            "End: I ate a delicious omelet for breakfast.\n\n"
            "Story: The runner tied his shoes tight. He sprinted as fast as he could during the race. He crossed the "
            "finish line first.\n(A) He was sad that he lost the race.\n(B) He won the gold medal.\n"
            "End: He won the gold medal.\n\n"
            "Story: {question}\n{choices}\nEnd:",
        ),
    ]
}
