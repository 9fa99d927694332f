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
The `cola_dlm` model of lm-evaluation-harness: generative tasks (`output_type: generate_until`) run by
[`ColaDLMPipeline`].

lm-eval 0.4 finds models only in its own registry, so import this module before evaluating (importing it registers
`cola_dlm`), or run lm-eval's command line through it:

    python -m cola_diffusers.evaluation.lm_eval_model --model cola_dlm \
        --model_args pretrained=PATH,steps=16,guidance_scale=7 --tasks TASK
"""

import logging
import sys
from dataclasses import dataclass

import lm_eval.models  # noqa: F401  (registers lm-eval's own models first: its registry loads them only when empty)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import simple_parse_args_string
from tqdm import tqdm

from ..generation.chat import CHAT_FORMATS
from ..generation.prompts import render_chat
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline


logger = logging.getLogger(__name__)

MODEL_NAME = "cola_dlm"
LIKELIHOOD_UNSUPPORTED = (
    "Cola-DLM has no cheap token likelihood: it generates continuous latents with a flow model and decodes them with "
    "a text VAE, so the likelihood of a text needs the VAE's evidence bound plus the flow's ODE density, not a "
    "per-token softmax. The `cola_dlm` model runs only generative tasks (`output_type: generate_until`); "
    "loglikelihood, loglikelihood_rolling and multiple_choice tasks are not supported."
)
TOKEN_LIMIT_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
SAMPLING_KEYS = ("top_k", "top_p", "repetition_penalty")


@dataclass(frozen=True)
class GenerationSettings:
    """The settings of a request taken from its `gen_kwargs`; requests with equal settings share batches."""

    gen_length: int
    stop: tuple[str, ...]
    temperature: float
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None

    def pipeline_kwargs(self) -> dict:
        kwargs = {"gen_length": self.gen_length, "stop": list(self.stop) or None, "temperature": self.temperature}
        kwargs.update({key: getattr(self, key) for key in SAMPLING_KEYS if getattr(self, key) is not None})
        return kwargs


def generation_settings(gen_kwargs: dict, default_gen_length: int) -> GenerationSettings:
    """
    Maps lm-eval's `gen_kwargs` to the pipeline's: `until` to `stop`, `max_gen_toks` (or an alias) to `gen_length`,
    `do_sample`/`temperature` to `temperature` (0 is greedy; `do_sample=True` alone samples at 1).
    """
    kwargs = dict(gen_kwargs)
    until = kwargs.pop("until", None)
    until = [until] if isinstance(until, str) else list(until or [])
    limits = [kwargs.pop(key) for key in TOKEN_LIMIT_KEYS if kwargs.get(key) is not None]
    do_sample = kwargs.pop("do_sample", None)
    temperature = kwargs.pop("temperature", None)
    if do_sample is False:
        temperature = 0.0
    elif temperature is None:
        temperature = 1.0 if do_sample else 0.0
    sampling = {key: kwargs.pop(key) for key in SAMPLING_KEYS if kwargs.get(key) is not None}
    for key in TOKEN_LIMIT_KEYS + SAMPLING_KEYS:
        kwargs.pop(key, None)
    if kwargs:
        logger.warning("cola_dlm ignores the generation arguments %s.", sorted(kwargs))
    return GenerationSettings(
        gen_length=int(limits[0]) if limits else default_gen_length,
        stop=tuple(text for text in until if text),
        temperature=float(temperature),
        **sampling,
    )


def resolve_device(device: str | None) -> str:
    """`device`, defaulting to CUDA where available; a CUDA device without CUDA falls back to the CPU."""
    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        if device is not None:
            logger.warning("CUDA is not available; cola_dlm runs on the CPU instead of %s.", device)
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@register_model(MODEL_NAME)
class ColaDLMEvalModel(LM):
    """
    lm-eval's `cola_dlm` model: `generate_until` requests answered by [`ColaDLMPipeline`].

    Args:
        pretrained (`str` or [`ColaDLMPipeline`]): A checkpoint folder or Hub repo id (diffusers or official layout),
            or a loaded pipeline.
        steps (`int`, *optional*): Scheduler steps per block (`num_inference_steps`); default the checkpoint's
            `default_num_inference_steps`, else `DEFAULTS.num_inference_steps`.
        guidance_scale (`float`, *optional*): Classifier-free guidance scale; default the checkpoint's
            `default_guidance_scale`, else `DEFAULTS.guidance_scale`.
        block_length (`int`, *optional*): Latents per generated block; default the transformer's `block_size`.
        dtype (`str`, *optional*): `"bf16"`, `"bfloat16"`, `"fp16"`, `"float32"`, ...; default the checkpoint's.
        device (`str`, *optional*): Default `"cuda"` where available, else `"cpu"`.
        batch_size (`int`, defaults to 1): Prompts per pipeline call; results do not depend on it.
        seed (`int`, defaults to 1234): Request `i` of a `generate_until` call uses `torch.Generator().manual_seed(
            seed + i)`.
        max_gen_toks (`int`, defaults to 256): New tokens of a request whose `gen_kwargs` set no `max_gen_toks`.
        max_batch_size (`int`, *optional*): Accepted for lm-eval's command line and ignored (no auto batch size).

    Prompts longer than the context allows with their new tokens keep their last tokens, as lm-eval's HF model
    truncates them; `--apply_chat_template` renders conversations in the checkpoint's chat format.
    """

    def __init__(
        self,
        pretrained: str | ColaDLMPipeline,
        steps: int | None = None,
        guidance_scale: float | None = None,
        block_length: int | None = None,
        dtype: str | None = None,
        device: str | None = None,
        batch_size: int | str = 1,
        seed: int = 1234,
        max_gen_toks: int = 256,
        max_batch_size: int | None = None,
    ):
        super().__init__()
        if str(batch_size).startswith("auto"):
            raise ValueError("cola_dlm has no automatic batch size; pass an integer `batch_size`.")
        if int(batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size!r}.")
        if isinstance(pretrained, ColaDLMPipeline):
            self.pipe = pretrained
        else:
            self.pipe = ColaDLMPipeline.from_pretrained(pretrained, dtype=dtype)
        self._device = torch.device(resolve_device(device))
        self.pipe.to(self._device)
        self.pipe.set_progress_bar_config(disable=True)
        steps, guidance_scale = self.pipe.checkpoint_defaults.steps_and_guidance(steps, guidance_scale)
        self.num_inference_steps, self.guidance_scale = int(steps), float(guidance_scale)
        self.block_length = None if block_length is None else int(block_length)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.max_gen_toks = int(max_gen_toks)
        self.warned_of_truncation = False

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "ColaDLMEvalModel":
        """Like lm-eval's, but `model_args` win over the command line's `--batch_size` and `--device` defaults."""
        additional = {key: value for key, value in (additional_config or {}).items() if value is not None}
        return cls(**{**additional, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "ColaDLMEvalModel":
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @property
    def tokenizer_name(self) -> str:
        """The key of chat-templated requests in lm-eval's cache: the tokenizer and the checkpoint's chat format."""
        return f"{self.pipe.tokenizer.name_or_path.replace('/', '__')}-{self.pipe.chat_format}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The template of the checkpoint's chat format, which lm-eval records with the results."""
        return CHAT_FORMATS[self.pipe.chat_format].template if chat_template else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """A conversation rendered as `messages=` renders it: in the checkpoint's chat format (`--apply_chat_template`)."""
        chat_format = CHAT_FORMATS[self.pipe.chat_format]
        return render_chat(self.pipe.tokenizer, chat_history, chat_format, add_generation_prompt)[0]

    def fitted(self, token_ids: list[int], gen_length: int) -> list[int]:
        """A prompt's last tokens that fit in the model's context with `gen_length` new ones, as lm-eval's HF model."""
        room = self.pipe.max_sequence_length - gen_length
        if len(token_ids) > room > 0:
            if not self.warned_of_truncation:
                logger.warning("cola_dlm keeps the last %d tokens of prompts longer than the context allows.", room)
                self.warned_of_truncation = True
            return token_ids[-room:]
        return token_ids

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(LIKELIHOOD_UNSUPPORTED)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(LIKELIHOOD_UNSUPPORTED)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """
        The continuation of every request's context, in the order of `requests`. Requests with equal generation
        settings are batched, longest prompt first; each has its own generator, so batching does not change results.
        """
        contexts = [request.args[0] for request in requests]
        empty = [index for index, context in enumerate(contexts) if not isinstance(context, str) or not context]
        if empty:
            raise ValueError(f"cola_dlm needs a non-empty prompt; request {empty[0]} has {contexts[empty[0]]!r}.")
        groups: dict[GenerationSettings, list[int]] = {}
        for index, request in enumerate(requests):
            settings = generation_settings(request.args[1] or {}, self.max_gen_toks)
            groups.setdefault(settings, []).append(index)
        token_ids = self.pipe.tokenize(contexts) if contexts else []
        results: list[str | None] = [None] * len(requests)
        progress = tqdm(
            total=len(requests), disable=disable_tqdm or self.rank != 0, desc="Running generate_until requests"
        )
        for settings, indices in groups.items():
            indices = sorted(indices, key=lambda index: -len(token_ids[index]))
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                output = self.pipe(
                    prompt_token_ids=[self.fitted(token_ids[index], settings.gen_length) for index in batch],
                    num_inference_steps=self.num_inference_steps,
                    guidance_scale=self.guidance_scale,
                    block_length=self.block_length,
                    generator=[torch.Generator().manual_seed(self.seed + index) for index in batch],
                    **settings.pipeline_kwargs(),
                )
                for index, text in zip(batch, output.texts):
                    results[index] = text
                    self.cache_hook.add_partial("generate_until", requests[index].args, text)
                progress.update(len(batch))
        progress.close()
        return results


def main():
    """lm-eval's command line (`lm_eval ...`) with the `cola_dlm` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    # Run as `python -m`: a later import of the module by name must find this one, not register a second class.
    sys.modules.setdefault("cola_diffusers.evaluation.lm_eval_model", sys.modules[__name__])
    main()
