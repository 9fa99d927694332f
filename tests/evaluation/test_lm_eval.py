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

"""The `cola_dlm` model of lm-evaluation-harness: a real lm-eval run on the demo task, and its request mapping."""

import glob
import json
import os
import subprocess
import sys

import datasets.config
import pytest
import torch

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.demo import DEMO_MODEL_PATH, demo_prompt

from ..conftest import FIXTURES, make_chat_pipeline, save_distilled_checkpoint


pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model, model_registry  # noqa: E402

from cola_diffusers.evaluation.lm_eval_model import ColaDLMEvalModel, generation_settings  # noqa: E402
from cola_diffusers.generation.chat import CHAT_FORMATS  # noqa: E402


TASKS_DIR = str(FIXTURES / "lm_eval_tasks")
SETTINGS = {"num_inference_steps": 16, "guidance_scale": 7.0}
SEED = 1234  # the model's default `seed`


@pytest.fixture(scope="module")
def pipe():
    pipe = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def request(context: str, gen_kwargs: dict) -> Instance:
    return Instance(request_type="generate_until", doc={}, arguments=(context, gen_kwargs), idx=0)


def test_cola_dlm_is_registered_next_to_lm_eval_models():
    assert get_model("cola_dlm") is ColaDLMEvalModel
    # Registering first must not hide lm-eval's own models, which its registry loads only while it is empty.
    assert "hf" in model_registry and "local-completions" in model_registry


MODEL_ARGS = f"pretrained={DEMO_MODEL_PATH},steps=16,guidance_scale=7,batch_size=8,dtype=float32"


def check_demo_samples(pipe, samples: list[dict], exact_match: float):
    """lm-eval's samples and score of the demo task are the pipeline's answers, request i with seed + i."""
    samples = sorted(samples, key=lambda sample: sample["doc_id"])
    assert [sample["doc_id"] for sample in samples] == list(range(20))
    prompts = [demo_prompt(sample["doc"]["digits"]) for sample in samples]
    generators = [torch.Generator().manual_seed(SEED + index) for index in range(len(prompts))]
    expected = pipe(prompts, gen_length=8, stop=["\n"], generator=generators, **SETTINGS).texts
    assert [sample["resps"][0][0] for sample in samples] == expected
    expected_exact_match = sum(text == sample["doc"]["answer"] for text, sample in zip(expected, samples)) / 20
    assert exact_match == expected_exact_match
    assert exact_match >= 0.7  # measured: 0.75 on these 20 (the demo model gets 88% of all 500 held-out strings)


@pytest.mark.slow
def test_lm_eval_command_line_scores_the_demo_task(pipe, tmp_path):
    command = [sys.executable, "-m", "cola_diffusers.evaluation.lm_eval_model", "--model", "cola_dlm"]
    command += ["--model_args", MODEL_ARGS, "--tasks", "cola_demo_reverse", "--include_path", TASKS_DIR]
    command += ["--device", "cpu", "--output_path", str(tmp_path / "results"), "--log_samples"]
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    result = subprocess.run(
        command, check=False, cwd=TASKS_DIR, capture_output=True, text=True, timeout=300, env={**os.environ, **offline}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (results_file,) = glob.glob(str(tmp_path / "results" / "*" / "results_*.json"))
    (samples_file,) = glob.glob(str(tmp_path / "results" / "*" / "samples_cola_demo_reverse_*.jsonl"))
    with open(results_file) as file:
        exact_match = json.load(file)["results"]["cola_demo_reverse"]["exact_match,none"]
    with open(samples_file) as file:
        check_demo_samples(pipe, [json.loads(line) for line in file], exact_match)


@pytest.mark.slow
def test_lm_eval_applies_the_checkpoints_chat_format(pipe, tmp_path, monkeypatch):
    """`--apply_chat_template` as the command line passes it on; only our task is indexed (lm-eval's take 20 s)."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    rendered, render = [], ColaDLMEvalModel.apply_chat_template

    def recording(*args, **kwargs):
        rendered.append(render(*args, **kwargs))
        return rendered[-1]

    monkeypatch.setattr(ColaDLMEvalModel, "apply_chat_template", recording)
    monkeypatch.chdir(TASKS_DIR)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    manager = TaskManager(include_path=TASKS_DIR, include_defaults=False)
    # The demo model's plain chat format sends the one user message verbatim: the answers of plain prompts.
    results = simple_evaluate(
        "cola_dlm", MODEL_ARGS, ["cola_demo_reverse"], device="cpu", apply_chat_template=True, task_manager=manager
    )
    assert rendered == [demo_prompt(sample["doc"]["digits"]) for sample in results["samples"]["cola_demo_reverse"]]
    exact_match = results["results"]["cola_demo_reverse"]["exact_match,none"]
    check_demo_samples(pipe, results["samples"]["cola_demo_reverse"], exact_match)


# Mixed prompt lengths and generation settings: grouping and length sorting must not change the order of results.
MIXED = [
    ("1234>", {"until": ["\n"], "max_gen_toks": 4}),
    ("1234>", {"until": ["3"], "max_gen_toks": 4}),
    ("98>", {"until": ["\n"], "max_gen_toks": 4}),
    ("9370>", {"until": "3", "max_gen_toks": 4}),
    ("5566>", {"until": [], "max_gen_toks": 2}),
    ("7788>", {"until": ["\n"], "max_gen_toks": 4, "do_sample": False, "temperature": 0.7}),
    ("0912>", {"until": ["\n"], "max_gen_toks": 4, "do_sample": True, "temperature": 0.8}),
    ("6>", {"until": ["\n"], "max_gen_toks": 4}),
]
# What each request should become in the pipeline: `until` → `stop`, `max_gen_toks` → `gen_length`, temperature.
MIXED_PIPELINE_KWARGS = [
    {"gen_length": 4, "stop": ["\n"], "temperature": 0.0},
    {"gen_length": 4, "stop": ["3"], "temperature": 0.0},
    {"gen_length": 4, "stop": ["\n"], "temperature": 0.0},
    {"gen_length": 4, "stop": ["3"], "temperature": 0.0},
    {"gen_length": 2, "stop": None, "temperature": 0.0},
    {"gen_length": 4, "stop": ["\n"], "temperature": 0.0},
    {"gen_length": 4, "stop": ["\n"], "temperature": 0.8},
    {"gen_length": 4, "stop": ["\n"], "temperature": 0.0},
]
FAST = {"num_inference_steps": 4, "guidance_scale": 7.0}


def test_generate_until_maps_requests_and_does_not_depend_on_batching(pipe):
    expected = [
        pipe([context], generator=[torch.Generator().manual_seed(7 + index)], **FAST, **kwargs).texts[0]
        for index, ((context, _), kwargs) in enumerate(zip(MIXED, MIXED_PIPELINE_KWARGS))
    ]
    # Requests 1 and 3 stop at "3": their texts are those of the same requests without the stop, cut before it.
    generators = [torch.Generator().manual_seed(7 + index) for index in (1, 3)]
    unstopped = pipe(["1234>", "9370>"], gen_length=4, generator=generators, **FAST).texts
    assert all("3" in text for text in unstopped)  # so that the cut is visible
    assert [expected[1], expected[3]] == [text.split("3")[0] for text in unstopped]
    assert len(expected[4]) == 2
    requests = [request(context, gen_kwargs) for context, gen_kwargs in MIXED]
    outputs = {}
    for batch_size in (1, 8):
        model = ColaDLMEvalModel(pipe, steps=4, guidance_scale=7, batch_size=batch_size, seed=7, device="cpu")
        outputs[batch_size] = model.generate_until(requests, disable_tqdm=True)
    assert outputs[1] == outputs[8] == expected


def test_generation_settings_follow_lm_eval_conventions():
    settings = generation_settings({"until": "\n", "max_new_tokens": 5, "do_sample": False, "temperature": 0.7}, 32)
    assert (settings.stop, settings.gen_length, settings.temperature) == (("\n",), 5, 0.0)
    settings = generation_settings({"until": ["", "\n\n"], "do_sample": True, "top_p": 0.9, "num_beams": 1}, 32)
    assert (settings.stop, settings.gen_length, settings.temperature, settings.top_p) == (("\n\n",), 32, 1.0, 0.9)
    assert generation_settings({"temperature": 0.5}, 32).pipeline_kwargs() == {
        "gen_length": 32,
        "stop": None,
        "temperature": 0.5,
    }


def test_model_args_override_command_line_defaults():
    model = ColaDLMEvalModel.create_from_arg_string(
        f"pretrained={DEMO_MODEL_PATH},steps=4,guidance_scale=3,batch_size=8,dtype=bf16",
        {"batch_size": 1, "max_batch_size": None, "device": "cpu"},
    )
    assert (model.batch_size, model.num_inference_steps, model.guidance_scale) == (8, 4, 3.0)
    assert model.pipe.transformer.dtype == torch.bfloat16 and model.device == torch.device("cpu")


def test_steps_and_guidance_default_to_the_checkpoint_defaults(pipe, tmp_path):
    folder = save_distilled_checkpoint(pipe, tmp_path)
    student = ColaDLMEvalModel(folder, device="cpu")
    assert (student.num_inference_steps, student.guidance_scale) == (1, 1.0)
    explicit = ColaDLMEvalModel(student.pipe, steps=4, guidance_scale=3, device="cpu")
    assert (explicit.num_inference_steps, explicit.guidance_scale) == (4, 3.0)
    plain = ColaDLMEvalModel(pipe, device="cpu")
    assert (plain.num_inference_steps, plain.guidance_scale) == (16, 7.0)
    generator = [torch.Generator().manual_seed(SEED)]
    expected = pipe(["1234>"], gen_length=4, generator=generator, num_inference_steps=1, guidance_scale=1.0).texts
    assert student.generate_until([request("1234>", {"max_gen_toks": 4})], disable_tqdm=True) == expected


def test_likelihood_requests_are_refused_with_the_reason(pipe):
    model = ColaDLMEvalModel(pipe, device="cpu")
    with pytest.raises(NotImplementedError, match="no cheap token likelihood.*ODE density.*generate_until"):
        model.loglikelihood([Instance("loglikelihood", {}, ("1234>", "4321"), 0)])
    with pytest.raises(NotImplementedError, match="generate_until"):
        model.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("1234>4321",), 0)])
    with pytest.raises(ValueError, match="non-empty prompt"):
        model.generate_until([request("1234>", {}), request("", {"until": ["\n"]})])


def test_chat_templates_are_the_checkpoints_chat_format():
    chat = make_chat_pipeline(extra_tokens=["■"])
    chat.register_to_config(chat_format="text")
    model = ColaDLMEvalModel(chat, device="cpu")
    history = [{"role": "user", "content": "the river"}, {"role": "assistant", "content": "runs"}]
    assert model.apply_chat_template(history[:1]) == "User: the river\nAssistant: "
    # A prefilled answer (lm-eval's `gen_prefix`) is continued, not closed.
    assert model.apply_chat_template(history, add_generation_prompt=False).endswith("Assistant: runs")
    assert model.chat_template(True) == CHAT_FORMATS["text"].template and model.chat_template(False) is None
    assert model.tokenizer_name.endswith("-text")


def test_prompts_longer_than_the_context_keep_their_last_tokens(pipe, caplog):
    context = "5" * 200 + "1234>"
    ids = pipe.tokenize(context)[0]
    assert len(ids) + 4 > pipe.max_sequence_length
    generator = [torch.Generator().manual_seed(SEED)]
    kept = ids[-(pipe.max_sequence_length - 4) :]
    expected = pipe(prompt_token_ids=[kept], gen_length=4, generator=generator, **FAST).texts
    model = ColaDLMEvalModel(pipe, steps=4, guidance_scale=7, device="cpu")
    with caplog.at_level("WARNING"):
        assert model.generate_until([request(context, {"max_gen_toks": 4})], disable_tqdm=True) == expected
    assert f"keeps the last {pipe.max_sequence_length - 4} tokens" in caplog.text
