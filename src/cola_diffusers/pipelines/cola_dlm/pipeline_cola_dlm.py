"""Text generation with Cola-DLM: block-causal flow matching in the latent space of a Text VAE."""

import contextlib
import os
from typing import Callable, Generator, Iterator

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.import_utils import compare_versions
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from transformers import PreTrainedTokenizerFast

from ...loaders.layout import (
    OFFICIAL_DIT_FOLDER,
    OFFICIAL_TOKENIZER_FILE,
    OFFICIAL_VAE_FOLDER,
    REPO_ID,
    is_official_layout,
)
from ...loaders.official_checkpoint import load_official_transformer, load_official_vae, official_chat_settings
from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...schedulers.scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler
from . import generation
from .chat import CHAT_FORMATS
from .generation import DEFAULT_MAX_SEQUENCE_LENGTH, EOS_TOKEN, PAD_TOKEN, ColaDLMLayout, retrieve_timesteps
from .pipeline_output import ColaDLMPipelineOutput, ColaDLMStreamChunk


logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```python
        >>> from cola_diffusers import ColaDLMPipeline

        >>> pipe = ColaDLMPipeline.from_pretrained("ByteDance-Seed/Cola-DLM")
        >>> output = pipe("The capital of France is", gen_length=32, num_inference_steps=16, guidance_scale=7.0)
        >>> print(output.texts[0])
        ```
"""


def load_tokenizer(tokenizer_file: str, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """
    Loads a `tokenizer.json`, naming `<|pad|>` and `<|endoftext|>` as pad and eos tokens when it has them, with
    `model_max_length` as its context (none recorded when it is None).
    """
    if not os.path.isfile(tokenizer_file):
        raise FileNotFoundError(f"The checkpoint is missing `{tokenizer_file}`.")
    kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
    try:
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, **kwargs)
    except Exception as error:
        raise ValueError(f"`{tokenizer_file}` is not a readable tokenizer file: {error}") from error
    vocab = tokenizer.get_vocab()
    special_tokens = {"pad_token": PAD_TOKEN, "eos_token": EOS_TOKEN}
    tokenizer.add_special_tokens({name: token for name, token in special_tokens.items() if token in vocab})
    return tokenizer


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype):
    """A `torch.dtype` from a dtype or its name (see `DTYPES`); dicts by component are resolved entry by entry."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, dict):
        return {name: resolve_dtype(value) for name, value in dtype.items()}
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"`dtype` must be a torch.dtype or one of {list(DTYPES)}, got {dtype!r}.")


class ColaDLMPipeline(DiffusionPipeline):
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
    ):
        super().__init__()
        if chat_format is not None and chat_format not in CHAT_FORMATS:
            raise ValueError(f"`chat_format` must be one of {list(CHAT_FORMATS)} or None, got {chat_format!r}.")
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
            chat_format=chat_format, chat_stop_token_id=chat_stop_token_id, chat_pad_with_stop=chat_pad_with_stop
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

    @property
    def pad_token_id(self) -> int | None:
        """The tokenizer's pad token (`<|pad|>` in the release)."""
        return self.tokenizer.pad_token_id

    @property
    def stop_token_ids(self) -> list[int]:
        """The tokenizer's `<|endoftext|>` and `<|im_end|>` tokens, where it has them."""
        return generation.get_stop_token_ids(self.tokenizer)

    @property
    def max_sequence_length(self) -> int:
        """
        Prompt plus new tokens at most: the tokenizer's `model_max_length` where the checkpoint records one, else
        4096 (the context of the release's OLMo 2 tokenizer).
        """
        return generation.max_sequence_length(self.tokenizer)

    @property
    def chat_format(self) -> str:
        """The checkpoint's chat format: `"plain"` unless it records another."""
        return self.config.chat_format or "plain"

    def chat_tokens(self, chat_format: str) -> tuple[int | None, bool]:
        """
        The token that ends a turn in `chat_format` (None where it is not one token) and whether it pads chat
        prompts: the format's, or what the checkpoint records for its own format.
        """
        chat = CHAT_FORMATS[chat_format]
        recorded = chat_format == self.chat_format
        stop_token_id = self.config.chat_stop_token_id if recorded else None
        if stop_token_id is None:
            stop_token_id = generation.chat_stop_token_id(self.tokenizer, chat)
        pad_with_stop = chat.pad_with_stop
        if recorded and self.config.chat_pad_with_stop is not None:
            pad_with_stop = self.config.chat_pad_with_stop
        return stop_token_id, pad_with_stop

    def stop_criteria(
        self,
        stop: str | list[str] | None = None,
        eos_token_id: int | list[int] | None = None,
        eos_early_stop: bool = True,
        chat_format: str | None = None,
    ) -> tuple[list[int], list[str] | None]:
        """The stop tokens and strings of a request; see [`generation.resolve_stops`]. `chat_format` for chats."""
        stop = [stop] if isinstance(stop, str) else stop
        if chat_format is None:
            return generation.resolve_stops(self.tokenizer, stop, eos_token_id, eos_early_stop)
        turn_stop_token_id = self.chat_tokens(chat_format)[0]
        chat = CHAT_FORMATS[chat_format]
        return generation.resolve_stops(self.tokenizer, stop, eos_token_id, eos_early_stop, chat, turn_stop_token_id)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "ColaDLMPipeline":
        """
        Loads a pipeline from a diffusers-format folder (`model_index.json`) or from the official release layout
        (`cola_dlm/cola_dit`, `cola_dlm/cola_vae`, `tokenizer.json`), local or a Hub repo id.

        Keyword arguments are those of [`~diffusers.DiffusionPipeline.from_pretrained`]. `dtype` (or `torch_dtype`)
        applies to both layouts: a `torch.dtype`, its name (`"bfloat16"`, `"bf16"`, `"float16"`, `"fp16"`,
        `"float32"`, `"fp32"`), or a dict of those by component name with an optional `"default"`.
        """
        if kwargs.get("dtype") is not None and kwargs.get("torch_dtype") is not None:
            raise ValueError("Pass either `dtype` or `torch_dtype`, not both.")
        dtype = resolve_dtype(kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None))
        folder = str(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            if not REPO_ID.fullmatch(folder):
                raise FileNotFoundError(f"The folder {folder} does not exist (and it is not a Hub repo id).")
            try:
                folder = snapshot_download(
                    folder,
                    revision=kwargs.pop("revision", None),
                    cache_dir=kwargs.pop("cache_dir", None),
                    token=kwargs.pop("token", None),
                    local_files_only=kwargs.pop("local_files_only", False),
                )
            except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
                raise OSError(
                    f"Cannot reach the Hub for {folder} ({type(error).__name__}): pass a local folder, or set "
                    "HF_HUB_OFFLINE=1 with a cached copy."
                ) from error
        if is_official_layout(folder):
            if kwargs.get("device_map") is not None:
                raise ValueError(
                    "`device_map` is not supported for the official layout; convert it once with "
                    "scripts/convert_cola_dlm_to_diffusers.py, or load it and call `.to(device)`."
                )
            return cls.from_official_checkpoint(folder, dtype=dtype)
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise FileNotFoundError(
                f"{folder} holds neither a diffusers pipeline (`model_index.json`) nor the official Cola-DLM layout "
                f"(`{OFFICIAL_DIT_FOLDER}`, `{OFFICIAL_VAE_FOLDER}`, `{OFFICIAL_TOKENIZER_FILE}`)."
            )
        if dtype is not None:
            # diffusers reads `dtype` from 0.40 on (and deprecates `torch_dtype`), only `torch_dtype` before.
            kwargs["dtype" if compare_versions("diffusers", ">=", "0.40.0") else "torch_dtype"] = dtype
        return super().from_pretrained(folder, **kwargs)

    @classmethod
    def from_official_checkpoint(
        cls, folder: str, dtype: torch.dtype | dict[str, torch.dtype] | None = None
    ) -> "ColaDLMPipeline":
        """
        Builds the pipeline from a folder in the official release layout, with weights in `dtype`: one dtype, or a
        dict by component name (`"transformer"`, `"vae"`) with an optional `"default"`. The tokenizer gets the
        release's context of 4096 tokens; the chat format is the DiT config's `sft_chat_format`, if any.
        """
        dtype = resolve_dtype(dtype)
        if isinstance(dtype, dict):
            transformer_dtype = dtype.get("transformer", dtype.get("default"))
            vae_dtype = dtype.get("vae", dtype.get("default"))
        else:
            transformer_dtype = vae_dtype = dtype
        return cls(
            transformer=load_official_transformer(os.path.join(folder, OFFICIAL_DIT_FOLDER), transformer_dtype),
            vae=load_official_vae(os.path.join(folder, OFFICIAL_VAE_FOLDER), vae_dtype),
            scheduler=FlowMatchBlockCausalScheduler(),
            tokenizer=load_tokenizer(os.path.join(folder, OFFICIAL_TOKENIZER_FILE), DEFAULT_MAX_SEQUENCE_LENGTH),
            **official_chat_settings(os.path.join(folder, OFFICIAL_DIT_FOLDER)),
        )

    def check_inputs(
        self,
        prompt,
        messages,
        gen_length,
        block_length,
        num_inference_steps,
        guidance_scale,
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        stop,
        output_type,
        callback_on_step_end_tensor_inputs,
        chat_format=None,
        max_sequence_length=None,
    ):
        generation.check_length_and_chat_inputs(messages, chat_format, gen_length, max_sequence_length)
        generation.check_generation_inputs(
            prompt,
            messages,
            gen_length,
            block_length,
            num_inference_steps,
            guidance_scale,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            stop,
        )
        if output_type not in ("text", "pt", "latent"):
            raise ValueError(f"`output_type` must be one of 'text', 'pt', 'latent', got {output_type!r}.")
        if callback_on_step_end_tensor_inputs is not None and not all(
            k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs
        ):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has to be in {self._callback_tensor_inputs}, but found "
                f"{[k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]}"
            )

    def tokenize(
        self,
        prompt: str | list[str] | None = None,
        messages: list[dict] | list[list[dict]] | None = None,
        chat_format: str | None = None,
        max_tokens: int | None = None,
    ) -> list[list[int]]:
        """
        Token ids of every prompt, or of every conversation in `messages` rendered in `chat_format` (default the
        checkpoint's). With `max_tokens`, a longer prompt raises a [`~generation.PromptTooLongError`], refused by its
        number of characters before tokenising where that suffices.
        """
        if messages is not None:
            chat = CHAT_FORMATS[chat_format or self.chat_format]
            prompt = generation.render_chat(self.tokenizer, messages, chat)
        prompts = [prompt] if isinstance(prompt, str) else prompt
        return generation.tokenize(self.tokenizer, prompts, max_tokens)

    def num_blocks(self, prompt_token_ids: list[list[int]], gen_length: int, block_length: int | None = None) -> int:
        """The blocks a call generates for these prompts: its `latents` are `num_blocks * block_length` long."""
        block_length = self.transformer.config.block_size if block_length is None else block_length
        lengths = [len(ids) for ids in prompt_token_ids]
        return generation.count_blocks(lengths, gen_length, block_length, self.vae.config.patch_size)

    def encode_prompt(
        self, prompt_token_ids: list[list[int]], block_length: int, pad_token_id: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.LongTensor]:
        """Normalised prompt latents and prompt lengths; see [`generation.encode_prompt`]."""
        return generation.encode_prompt(self.vae, prompt_token_ids, block_length, pad_token_id, device)

    def prepare_latents(
        self,
        batch_size: int,
        num_latents: int,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The starting noise of every block, `(batch_size, num_blocks * block_length, latent_dim)`, fp32."""
        return generation.prepare_latents(self.transformer, batch_size, num_latents, generator, device, latents)

    def truncate(
        self, new_token_ids: list[int], stop_token_ids: list[int], stop: list[str] | None
    ) -> tuple[list[int], str, bool]:
        """
        Cuts new tokens at the first stop token (kept) or after the token that completes a stop string.

        Returns:
            `(token_ids, text, stopped)`: the kept tokens, their text without the stop token or stop string, and
            whether a stop token or string was found.
        """
        return generation.truncate(self.tokenizer, new_token_ids, stop_token_ids, stop)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        messages: list[dict] | list[list[dict]] | None = None,
        chat_format: str | None = None,
        gen_length: int = 32,
        block_length: int | None = None,
        num_inference_steps: int = 16,
        timesteps: list[float] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.0,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.1,
        eos_early_stop: bool = True,
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
    ) -> ColaDLMPipelineOutput | tuple:
        """
        Generates text continuing every prompt.

        Args:
            prompt (`str` or `list[str]`): The prompt(s); each must tokenize to at least one token.
            messages (`list[dict]` or `list[list[dict]]`, *optional*): Chat conversations instead of `prompt`.
            chat_format (`str`, *optional*): How `messages` are rendered: `"plain"`, `"text"` or `"chatml"` (see
                [`ColaDLMPipeline`]); default the checkpoint's, `"plain"` unless it records one. The format's stop
                string or token ends the answer.
            gen_length (`int`, defaults to 32): Number of new tokens per prompt.
            block_length (`int`, *optional*): Latents per generated block; defaults to the transformer's `block_size`.
            num_inference_steps (`int`, defaults to 16): Scheduler steps per block.
            timesteps (`list[float]`, *optional*), sigmas (`list[float]`, *optional*): A custom schedule of every
                block, for schedulers whose `set_timesteps` accepts it.
            guidance_scale (`float`, defaults to 7.0): Classifier-free guidance between the conditional velocity
                (block + context) and the unconditional one (block alone); 1 runs one pass per step. A prompt
                shorter than one block has no context for its first block, which is generated with scale 1.
                Ignored when the pipeline has a `guider`.
            temperature (`float`, defaults to 0.0): Token sampling temperature; 0 is greedy.
            top_k (`int`, *optional*), top_p (`float`, *optional*): Token filters when `temperature > 0`.
            repetition_penalty (`float`, defaults to 1.1): Penalty of tokens sampled in earlier blocks.
            eos_early_stop (`bool`, defaults to `True`): Cut each sequence after its first stop token and stop when
                every prompt has stopped.
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

        Examples:

        Returns:
            [`ColaDLMPipelineOutput`] or `tuple`: `(sequences, texts, latents)` when `return_dict` is False.
        """
        arguments = {name: value for name, value in locals().items() if name not in ("self", "return_dict")}
        generation = self._generate(**arguments)
        while True:
            try:
                next(generation)
            except StopIteration as finished:
                output = finished.value
                break
        if not return_dict:
            return (output.sequences, output.texts, output.latents)
        return output

    @torch.no_grad()
    def stream(
        self, prompt: str | list[str] | None = None, preview_every: int | None = None, **kwargs
    ) -> Iterator[ColaDLMStreamChunk]:
        """
        Generates like `__call__`, yielding a [`ColaDLMStreamChunk`] with the new text of every prompt as soon as a
        block is decoded. Joining the `texts` of the block chunks gives the texts `__call__` returns.

        Args:
            prompt: As for `__call__`; every other argument of `__call__` but `return_dict` is accepted.
            preview_every (`int`, *optional*): Also yield a preview chunk every `preview_every` denoising steps:
                the tokens of the current block's predicted clean latents, `x_0 = x_t - σ v`.

        Returns:
            The final [`ColaDLMPipelineOutput`] as the generator's return value.
        """
        if preview_every is not None and (not isinstance(preview_every, int) or preview_every < 1):
            raise ValueError(f"`preview_every` must be an integer >= 1 or None, got {preview_every!r}.")
        return (yield from self._generate(prompt=prompt, preview_every=preview_every, streaming=True, **kwargs))

    def _generate(
        self,
        prompt=None,
        messages=None,
        chat_format=None,
        gen_length=32,
        block_length=None,
        num_inference_steps=16,
        timesteps=None,
        sigmas=None,
        guidance_scale=7.0,
        temperature=0.0,
        top_k=None,
        top_p=None,
        repetition_penalty=1.1,
        eos_early_stop=True,
        eos_token_id=None,
        stop=None,
        pad_token_id=None,
        generator=None,
        latents=None,
        output_type="text",
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=None,
        max_sequence_length=None,
        preview_every=None,
        streaming=False,
    ) -> Generator[ColaDLMStreamChunk, None, ColaDLMPipelineOutput]:
        """The generation loop behind `__call__` and `stream`; yields chunks only when `streaming`."""
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        block_length = self.transformer.config.block_size if block_length is None else block_length
        max_sequence_length = self.max_sequence_length if max_sequence_length is None else max_sequence_length
        stop = [stop] if isinstance(stop, str) else stop
        self.check_inputs(
            prompt,
            messages,
            gen_length,
            block_length,
            num_inference_steps,
            guidance_scale,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            stop,
            output_type,
            callback_on_step_end_tensor_inputs,
            chat_format,
            max_sequence_length,
        )
        if messages is not None:
            chat_format = chat_format or self.chat_format
            turn_stop_token_id, pad_with_stop = self.chat_tokens(chat_format)
            if pad_token_id is None and pad_with_stop and turn_stop_token_id is not None:
                pad_token_id = turn_stop_token_id
        pad_token_id = self.pad_token_id if pad_token_id is None else pad_token_id
        generation.check_pad_token_id(pad_token_id)
        stop_token_ids, stop = self.stop_criteria(stop, eos_token_id, eos_early_stop, chat_format)
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device

        # 1. Encode the prompts.
        prompt_token_ids = self.tokenize(prompt, messages, chat_format, max_sequence_length - gen_length)
        prompt_latents, num_prompt_tokens = self.encode_prompt(prompt_token_ids, block_length, pad_token_id, device)

        # 2. Lay out the prefixes and the generated blocks in the caches, and prefill both caches with the prefixes.
        layout = ColaDLMLayout.from_prompts(
            prompt_latents,
            num_prompt_tokens,
            gen_length,
            block_length,
            self.vae.config.patch_size,
            self.vae.config.block_size,
        )
        batch_size, num_blocks = layout.batch_size, layout.num_blocks
        transformer_cache, vae_cache = generation.prefill_caches(self.transformer, self.vae, layout, prompt_latents)

        latents = self.prepare_latents(batch_size, num_blocks * block_length, generator, device, latents)
        clean_latents = torch.zeros_like(latents)
        tokens = layout.empty_tokens(pad_token_id)
        block_timesteps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        steps_per_block = len(block_timesteps)
        self._num_timesteps = num_blocks * steps_per_block
        streamed_texts = [""] * batch_size

        # 3. Generate block by block.
        # No bar inside streamed text: the stream itself shows the progress.
        with self.progress_bar(total=num_blocks) if not streaming else contextlib.nullcontext() as progress_bar:
            for block_index in range(num_blocks):
                block = layout.block(block_index, guidance_scale)
                block_latents = block.repaint(latents[:, block.latent_slice])

                block_timesteps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
                modulations = generation.step_modulations(self.transformer, block, block_timesteps)
                for step_index, (t, modulation) in enumerate(zip(block_timesteps, modulations)):
                    block_latents, velocity = generation.denoise_step(
                        self.transformer,
                        self.scheduler,
                        self.guider,
                        block,
                        block_latents,
                        t,
                        step_index,
                        steps_per_block,
                        transformer_cache,
                        modulation,
                    )

                    if callback_on_step_end is not None:
                        callback_kwargs = {"latents": block_latents}
                        callback_outputs = callback_on_step_end(
                            self, block_index * steps_per_block + step_index, t, callback_kwargs
                        )
                        block_latents = callback_outputs.pop("latents", block_latents)

                    if streaming and preview_every and (step_index + 1) % preview_every == 0:
                        sigma = t.float() / self.scheduler.config.num_train_timesteps
                        preview_latents = block_latents - sigma * velocity
                        preview = generation.decode_logits(self.vae, block, preview_latents, vae_cache).argmax(-1)
                        # The first block's re-emitted prompt tokens are not new text: left out, as in the output.
                        trimmed = layout.num_trimmed_tokens if block_index == 0 else [0] * batch_size
                        preview_ids = [ids[start:] for ids, start in zip(preview.tolist(), trimmed)]
                        yield ColaDLMStreamChunk(
                            block_index=block_index,
                            step_index=step_index,
                            token_ids=preview_ids,
                            texts=self.tokenizer.batch_decode(preview_ids, skip_special_tokens=True),
                            finished=[False] * batch_size,
                            is_preview=True,
                        )

                clean_latents[:, block.latent_slice] = block_latents
                generation.decode_block(
                    self.vae,
                    block,
                    block_latents,
                    vae_cache,
                    tokens,
                    temperature,
                    top_k,
                    top_p,
                    repetition_penalty,
                    generator,
                )
                if progress_bar is not None:
                    progress_bar.update()

                results = generation.truncate_new_tokens(
                    self.tokenizer, tokens, layout, block.token_slice.stop, gen_length, stop_token_ids, stop
                )
                finished = [stopped for _, _, stopped in results]
                if streaming:
                    chunk_texts = []
                    last_block = all(finished) or block_index + 1 == num_blocks or self.interrupt
                    for row, (_, text, stopped) in enumerate(results):
                        # Hold back a trailing partial character until the tokens that complete it arrive.
                        visible = text if stopped or last_block else text.rstrip("\ufffd")
                        chunk_texts.append(visible[len(streamed_texts[row]) :])
                        streamed_texts[row] = visible
                    yield ColaDLMStreamChunk(
                        block_index=block_index,
                        step_index=None,
                        token_ids=tokens[:, block.token_slice].tolist(),
                        texts=chunk_texts,
                        finished=finished,
                        is_preview=False,
                    )
                if all(finished) or self.interrupt:
                    if progress_bar is not None and block_index + 1 < num_blocks:
                        # The budget was not needed: the bar ends full, saying why.
                        reason = "every prompt stopped" if all(finished) else "interrupted"
                        progress_bar.set_postfix_str(reason, refresh=False)
                        progress_bar.total = block_index + 1
                    break
                if block_index + 1 < num_blocks:
                    generation.commit_block(self.transformer, block, block_latents, transformer_cache)

        # 4. Trim the repainted prompt tokens, cut at the first stop, pad to `gen_length`.
        sequences, texts = generation.pad_sequences(results, gen_length, pad_token_id, device)
        self.maybe_free_model_hooks()
        return ColaDLMPipelineOutput(
            sequences=sequences,
            texts=texts if output_type == "text" else None,
            latents=clean_latents if output_type == "latent" else None,
        )
