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

"""Text generation with Cola-DLM: block-causal flow matching in the latent space of a Text VAE."""

import threading
from typing import Callable, Iterator

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import replace_example_docstring
from transformers import PreTrainedTokenizerFast

from ...generation.chat import CHAT_FORMATS
from ...generation.inputs import check_checkpoint_defaults
from ...generation.request import REQUEST_ARGUMENTS, GenerationRequest
from ...loaders.official_checkpoint import FromOfficialLayoutMixin
from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...models.transformers.transformer_cola import ColaTransformer1DModel
from .cuda_graphs import CudaGraphsMixin
from .layout import ColaDLMLayout
from .pipeline_output import ColaDLMPipelineOutput, ColaDLMStreamChunk, make_output
from .progress import block_progress_bar, end_progress_bar
from .prompting import ColaDLMPromptMixin
from .sampler import BlockSampler, prepare_latents, retrieve_timesteps
from .streaming import (
    ColaDLMIteratorStreamer,
    ColaDLMStreamer,
    TextDeltas,
    block_chunk,
    check_preview_every,
    preview_chunk,
)


EXAMPLE_DOC_STRING = """
    Examples:
        ```python
        >>> from cola_diffusers import ColaDLMPipeline

        >>> pipe = ColaDLMPipeline.from_pretrained("ByteDance-Seed/Cola-DLM")
        >>> output = pipe("The capital of France is", gen_length=32, num_inference_steps=16, guidance_scale=7.0)
        >>> print(output.texts[0])
        ```
"""


class ColaDLMPipeline(FromOfficialLayoutMixin, ColaDLMPromptMixin, CudaGraphsMixin, DiffusionPipeline):
    r"""
    Pipeline for text generation with Cola-DLM.

    The prompt is encoded by the Text VAE into latents; the block-causal DiT prior generates new latents one block
    at a time by integrating a flow-matching ODE (with classifier-free guidance against the block alone), and the
    VAE decoder turns every finished block into tokens. Keys and values of the prompt and of finished blocks are
    cached in both models.

    Args:
        transformer ([`ColaTransformer1DModel`]): The DiT prior.
        vae ([`AutoencoderKLColaText`]): The Text VAE.
        scheduler ([`SchedulerMixin`]): Integrates every block from noise to data; [`FlowMatchBlockCausalScheduler`]
            by default, or any diffusers flow-matching scheduler.
        tokenizer ([`~transformers.PreTrainedTokenizerFast`]): The tokenizer of the VAE's vocabulary.
        guider ([`~diffusers.guiders.BaseGuidance`], *optional*): Replaces the built-in classifier-free guidance
            (and `guidance_scale`) with a diffusers guider, e.g. `ClassifierFreeGuidance(guidance_rescale=...)`.
        chat_format (`str`, *optional*): How `messages` become a prompt: `"plain"` (the default; the official
            adapter's rendering for base checkpoints), `"text"` (the official SFT format, `User: ...` /
            `Assistant: ...■`) or `"chatml"`. Saved with the pipeline; the official layout takes it from the DiT
            config's `sft_chat_format`.
        chat_stop_token_id (`int`, *optional*): The token that ends an assistant turn, when it is not the format's
            (`■` for `"text"`, `<|im_end|>` for `"chatml"`); the official `sft_stop_token_id`.
        chat_pad_with_stop (`bool`, *optional*): Pad chat prompts with the stop token instead of `<|pad|>`; default
            True for `"text"`, as the official chat CLI does, else False (the official `sft_pad_with_stop`).
        default_num_inference_steps (`int`, *optional*): The checkpoint's steps per block when a call sets none,
            e.g. 1 for a distilled student; None keeps `DEFAULTS.num_inference_steps`. Saved with the pipeline.
        default_guidance_scale (`float`, *optional*): The checkpoint's guidance scale when a call sets none, e.g. 1
            for a distilled student; None keeps `DEFAULTS.guidance_scale`. Saved with the pipeline.
    """

    model_cpu_offload_seq = "vae->transformer"
    _optional_components = ["guider"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        transformer: ColaTransformer1DModel,
        vae: AutoencoderKLColaText,
        scheduler: SchedulerMixin,
        tokenizer: PreTrainedTokenizerFast,
        guider: BaseGuidance | None = None,
        chat_format: str | None = None,
        chat_stop_token_id: int | None = None,
        chat_pad_with_stop: bool | None = None,
        default_num_inference_steps: int | None = None,
        default_guidance_scale: float | None = None,
    ):
        super().__init__()
        if chat_format is not None and chat_format not in CHAT_FORMATS:
            raise ValueError(f"`chat_format` must be one of {list(CHAT_FORMATS)} or None, got {chat_format!r}.")
        check_checkpoint_defaults(default_num_inference_steps, default_guidance_scale)
        in_channels = transformer.config.in_channels
        latent_channels = (in_channels, transformer.config.out_channels or in_channels)
        if latent_channels != (vae.config.latent_dim,) * 2:
            raise ValueError(
                f"The VAE's `latent_dim` ({vae.config.latent_dim}) must equal the transformer's `in_channels` and "
                f"`out_channels` {latent_channels}."
            )
        if len(tokenizer) > vae.config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} entries, more than the VAE's `vocab_size` "
                f"({vae.config.vocab_size})."
            )
        self.register_modules(
            transformer=transformer, vae=vae, scheduler=scheduler, tokenizer=tokenizer, guider=guider
        )
        self.register_to_config(
            chat_format=chat_format,
            chat_stop_token_id=chat_stop_token_id,
            chat_pad_with_stop=chat_pad_with_stop,
            default_num_inference_steps=default_num_inference_steps,
            default_guidance_scale=default_guidance_scale,
        )

    def register_to_config(self, **kwargs):
        # transformers 5 names `PreTrainedTokenizerFast` `TokenizersBackend`, a class transformers 4 lacks.
        if kwargs.get("tokenizer") == ("transformers", PreTrainedTokenizerFast.__name__):
            kwargs["tokenizer"] = ("transformers", "PreTrainedTokenizerFast")
        super().register_to_config(**kwargs)

    @property
    def guidance_scale(self):
        return self._guidance_scale

    @property
    def num_timesteps(self):
        return self._num_timesteps

    @property
    def interrupt(self):
        return self._interrupt

    def check_inputs(self, output_type, callback_on_step_end, callback_on_step_end_tensor_inputs, preview_every):
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        check_preview_every(preview_every)
        if output_type not in ("text", "pt", "latent"):
            raise ValueError(f"`output_type` must be one of 'text', 'pt', 'latent', got {output_type!r}.")
        if callback_on_step_end_tensor_inputs is not None and not all(
            k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs
        ):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has to be in {self._callback_tensor_inputs}, but found "
                f"{[k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]}"
            )

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        messages: list[dict] | list[list[dict]] | None = None,
        prompt_token_ids: list[list[int]] | None = None,
        chat_format: str | None = None,
        gen_length: int | None = None,
        block_length: int | None = None,
        num_inference_steps: int | None = None,
        timesteps: list[float] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        eos_early_stop: bool | None = None,
        eos_token_id: int | list[int] | None = None,
        stop: str | list[str] | None = None,
        pad_token_id: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "text",
        return_dict: bool = True,
        callback_on_step_end: Callable[[int, int, dict], None]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int | None = None,
        streamer: ColaDLMStreamer | None = None,
        preview_every: int | None = None,
        request: GenerationRequest | None = None,
        prompt_latents: torch.Tensor | None = None,
    ) -> ColaDLMPipelineOutput | tuple:
        """
        Generates text continuing every prompt. Every setting left None takes the checkpoint's value (its
        `default_num_inference_steps`, `default_guidance_scale`, `chat_format`, the DiT's `block_size`), else the
        value of [`~generation.inputs.DEFAULTS`].

        Args:
            prompt (`str` or `list[str]`): The prompt(s); each must tokenize to at least one token.
            messages (`list[dict]` or `list[list[dict]]`, *optional*): Chat conversations instead of `prompt`.
            prompt_token_ids (`list[list[int]]`, *optional*): Token ids of every prompt instead of `prompt`, for
                callers that have tokenized already.
            chat_format (`str`, *optional*): How `messages` are rendered: `"plain"`, `"text"` or `"chatml"` (see
                [`ColaDLMPipeline`]); default the checkpoint's. The format's stop string or token ends the answer.
            gen_length (`int`, *optional*): Number of new tokens per prompt.
            block_length (`int`, *optional*): Latents per generated block; default the transformer's `block_size`.
            num_inference_steps (`int`, *optional*): Scheduler steps per block.
            timesteps (`list[float]`, *optional*), sigmas (`list[float]`, *optional*): A custom schedule of every
                block, for schedulers whose `set_timesteps` accepts it.
            guidance_scale (`float`, *optional*): Classifier-free guidance between the conditional velocity
                (block + context) and the unconditional one (block alone); 1 runs one pass per step. A prompt
                shorter than one block has no context for its first block, which is generated with scale 1. Ignored
                when the pipeline has a `guider`.
            temperature (`float`, *optional*): Token sampling temperature; 0 is greedy.
            top_k (`int`, *optional*), top_p (`float`, *optional*): Token filters when `temperature > 0`.
            repetition_penalty (`float`, *optional*): Penalty of tokens sampled in earlier blocks.
            presence_penalty (`float`, *optional*), frequency_penalty (`float`, *optional*): OpenAI's penalties, in
                [-2, 2], of the new tokens sampled in earlier blocks: once per token, and per occurrence.
            eos_early_stop (`bool`, *optional*): Cut each sequence after its first stop token and stop when every
                prompt has stopped; default True.
            eos_token_id (`int` or `list[int]`, *optional*): Stop tokens; default `<|endoftext|>` and `<|im_end|>`.
            stop (`str` or `list[str]`, *optional*): Stop strings: the text ends before the first of them, and a
                prompt that produced one has stopped.
            pad_token_id (`int`, *optional*): Pad token of the prompt's last block and of `sequences`; default
                the tokenizer's `<|pad|>`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): Randomness of noise and sampling;
                one generator per prompt makes every prompt's result independent of its batch.
            latents (`torch.Tensor`, *optional*): Starting noise of every block, `(batch_size, num_blocks *
                block_length, latent_dim)`, block `b` at positions `[b * block_length, (b + 1) * block_length)`.
            output_type (`str`, defaults to `"text"`): `"text"` adds decoded `texts`, `"latent"` adds the clean
                block `latents`, `"pt"` returns token ids only.
            return_dict (`bool`, defaults to `True`): Return a [`ColaDLMPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): Called after every denoising step as
                `callback_on_step_end(self, step, timestep, callback_kwargs)`; may return a new `latents` (the
                current block). Setting `pipe._interrupt = True` in it stops generation after the current block.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): Tensors passed to the callback.
            max_sequence_length (`int`, *optional*): Prompt tokens plus `gen_length` at most; a longer prompt raises
                a `ValueError` before any model work. Default [`~ColaDLMPipeline.max_sequence_length`].
            streamer ([`ColaDLMStreamer`], *optional*): Receives a [`ColaDLMStreamChunk`] with the new text of every
                prompt as soon as a block is decoded, then `end()`; no progress bar is shown.
            preview_every (`int`, *optional*): With a `streamer`, also send a preview chunk every `preview_every`
                denoising steps: the tokens of the current block's predicted clean latents, `x_0 = x_t - σ v`.
            request ([`~generation.request.GenerationRequest`], *optional*): A request made by `make_request`,
                instead of the prompt and setting arguments above (which then stay unset).
            prompt_latents (`torch.Tensor`, *optional*): The request's prompts encoded by `encode_prompt`, to skip
                encoding them again.

        Examples:

        Returns:
            [`ColaDLMPipelineOutput`] or `tuple`: `(sequences, texts, latents)` when `return_dict` is False.
        """
        # 1. Check the inputs; resolve the request: its prompts' token ids and every setting, defaults included.
        arguments = {name: value for name, value in locals().items() if name in REQUEST_ARGUMENTS}
        request = self.make_request(request, **arguments)
        self.check_inputs(output_type, callback_on_step_end, callback_on_step_end_tensor_inputs, preview_every)
        self._guidance_scale, self._interrupt, device = request.guidance_scale, False, self._execution_device

        # 2. Encode the prompts into latents.
        prompt_lengths = torch.tensor([len(ids) for ids in request.prompt_token_ids], device=device)
        if prompt_latents is None:
            prompt_latents, prompt_lengths = self.encode_prompt(request, device)

        # 3. Lay the request out in the caches, prepare the noise and timesteps.
        layout = ColaDLMLayout.from_prompts(
            prompt_latents, prompt_lengths, request.gen_length, request.block_length, self.vae.config
        )
        latents = prepare_latents(self.transformer, layout, generator, device, latents)
        clean_latents, tokens = torch.zeros_like(latents), layout.empty_tokens(request.pad_token_id)
        schedule = retrieve_timesteps(self.scheduler, request, device)
        self._num_timesteps = layout.num_blocks * len(schedule)
        text_deltas, commit = TextDeltas(layout.batch_size), None

        # 4. Prefill the caches with the prompts, then generate block by block: denoise a block from noise (its first
        #    pass also writes the previous block into the DiT cache), decode it into tokens, cut at the first stops.
        with self.cuda_graphs_turn(), block_progress_bar(self, layout.num_blocks, streamer) as bar:
            sampler = BlockSampler(
                self.transformer, self.vae, self.scheduler, self.guider, layout, schedule, self._dit_graphs
            )
            sampler.prefill(prompt_latents)
            for block_index in range(layout.num_blocks):
                block = layout.block(block_index, request.guidance_scale)
                block_latents = block.repaint(latents[:, block.latent_slice])
                # Every block runs the whole schedule: the scheduler starts afresh.
                schedule = retrieve_timesteps(self.scheduler, request, device)
                for step_index, t in enumerate(schedule):
                    block_latents, velocity = sampler.denoise_step(
                        block, block_latents, t, step_index, len(schedule), commit=commit
                    )
                    commit = None
                    if callback_on_step_end is not None:
                        step = block_index * len(schedule) + step_index
                        outputs = callback_on_step_end(self, step, t, {"latents": block_latents})
                        block_latents = outputs.pop("latents", block_latents)
                    if streamer is not None and preview_every and (step_index + 1) % preview_every == 0:
                        predicted = block_latents - self.sigma(t) * velocity
                        streamer.put(preview_chunk(self.tokenizer, sampler, block, predicted, step_index))

                clean_latents[:, block.latent_slice] = block_latents
                logits = sampler.decode_block(block, block_latents)
                history = tokens[:, : block.token_slice.start]
                tokens[:, block.token_slice] = request.sampling(logits, history, generator, layout.num_trimmed_tokens)
                completions = self.completions(request, layout, tokens, block.token_slice.stop)
                finished = all(completion.stopped for completion in completions)
                last = finished or self.interrupt or block_index + 1 == layout.num_blocks
                if streamer is not None:
                    streamer.put(block_chunk(block, tokens, completions, text_deltas(completions, last)))
                bar.update()
                if last:
                    end_progress_bar(bar, block_index, "every prompt stopped" if finished else "interrupted")
                    break
                commit = (block, block_latents)

        # 5. Pad the kept tokens of every prompt to `gen_length`; say why each ended.
        if streamer is not None:
            streamer.end()
        self.maybe_free_model_hooks()
        interrupted = block_index + 1 < layout.num_blocks and not finished
        output = make_output(request, completions, clean_latents, output_type, interrupted)
        return output if return_dict else (output.sequences, output.texts, output.latents)

    def stream(
        self, prompt: str | list[str] | None = None, preview_every: int | None = None, **kwargs
    ) -> Iterator[ColaDLMStreamChunk]:
        """
        Generates like `__call__` (in a worker thread, with a [`ColaDLMIteratorStreamer`]), yielding a
        [`ColaDLMStreamChunk`] with the new text of every prompt as soon as a block is decoded. Joining the `texts`
        of the block chunks gives the texts `__call__` returns. Closing the iterator early stops generation after
        the current block.

        Args:
            prompt: As for `__call__`; every other argument of `__call__` but `return_dict` and `streamer` is accepted.
            preview_every (`int`, *optional*): Also yield a preview chunk every `preview_every` denoising steps.

        Returns:
            The final [`ColaDLMPipelineOutput`] as the generator's return value.
        """
        streamer = ColaDLMIteratorStreamer()
        result = {}

        def generate():
            try:
                result["output"] = self(prompt, streamer=streamer, preview_every=preview_every, **kwargs)
            except BaseException as error:
                result["error"] = error
            finally:
                streamer.end()

        worker = threading.Thread(target=generate, name="cola-dlm-stream", daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            while worker.is_alive():
                # A consumer that stops early ends the generation at the next block boundary.
                self._interrupt = True
                worker.join(timeout=0.05)
        if "error" in result:
            raise result["error"]
        return result["output"]

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level of timestep `t`."""
        return t.float() / self.scheduler.config.num_train_timesteps
