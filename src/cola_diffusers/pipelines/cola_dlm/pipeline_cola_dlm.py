"""Text generation with Cola-DLM: block-causal flow matching in the latent space of a Text VAE."""

import inspect
import os
from typing import Callable, Generator, Iterator

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import snapshot_download
from transformers import PreTrainedTokenizerFast

from ...loaders.official_checkpoint import (
    OFFICIAL_DIT_FOLDER,
    OFFICIAL_TOKENIZER_FILE,
    OFFICIAL_VAE_FOLDER,
    is_official_layout,
    load_official_transformer,
    load_official_vae,
)
from ...models.attention_cola import block_causal_mask
from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...models.transformers.transformer_cola import ColaTransformer1DModel
from ...schedulers.scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler
from .pipeline_output import ColaDLMPipelineOutput, ColaDLMStreamChunk
from .sampling import sample_tokens


logger = logging.get_logger(__name__)

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"

EXAMPLE_DOC_STRING = """
    Examples:
        ```python
        >>> from cola_diffusers import ColaDLMPipeline

        >>> pipe = ColaDLMPipeline.from_pretrained("ByteDance-Seed/Cola-DLM")
        >>> output = pipe("The capital of France is", gen_length=32, num_inference_steps=16, guidance_scale=7.0)
        >>> print(output.texts[0])
        ```
"""


def load_tokenizer(tokenizer_file: str) -> PreTrainedTokenizerFast:
    """Loads a `tokenizer.json`, naming `<|pad|>` and `<|endoftext|>` as pad and eos tokens when it has them."""
    if not os.path.isfile(tokenizer_file):
        raise FileNotFoundError(f"The checkpoint is missing `{tokenizer_file}`.")
    try:
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file)
    except Exception as error:
        raise ValueError(f"`{tokenizer_file}` is not a readable tokenizer file: {error}") from error
    vocab = tokenizer.get_vocab()
    special_tokens = {"pad_token": PAD_TOKEN, "eos_token": EOS_TOKEN}
    tokenizer.add_special_tokens({name: token for name, token in special_tokens.items() if token in vocab})
    return tokenizer


def retrieve_timesteps(
    scheduler: SchedulerMixin,
    num_inference_steps: int | None,
    device: torch.device,
    timesteps: list[float] | None = None,
    sigmas: list[float] | None = None,
) -> torch.Tensor:
    """Calls `scheduler.set_timesteps` with a step count, custom `timesteps` or custom `sigmas`; returns timesteps."""
    if timesteps is not None and sigmas is not None:
        raise ValueError("Pass either `timesteps` or `sigmas`, not both.")
    for name, value in (("timesteps", timesteps), ("sigmas", sigmas)):
        if value is not None:
            if name not in inspect.signature(scheduler.set_timesteps).parameters:
                raise ValueError(f"The scheduler {scheduler.__class__.__name__} does not accept custom `{name}`.")
            scheduler.set_timesteps(**{name: value}, device=device)
            return scheduler.timesteps
    scheduler.set_timesteps(num_inference_steps, device=device)
    return scheduler.timesteps


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
    ):
        super().__init__()
        in_channels = transformer.config.in_channels
        latent_channels = (in_channels, transformer.config.out_channels or in_channels)
        if latent_channels != (vae.config.latent_dim,) * 2:
            raise ValueError(
                f"The VAE's `latent_dim` ({vae.config.latent_dim}) must equal the transformer's `in_channels` and "
                f"`out_channels` {latent_channels}."
            )
        if len(tokenizer) > vae.config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} entries, more than the VAE's `vocab_size` ({vae.config.vocab_size})."
            )
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler, tokenizer=tokenizer, guider=guider)

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
        vocab = self.tokenizer.get_vocab()
        return [vocab[token] for token in (EOS_TOKEN, IM_END_TOKEN) if token in vocab]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "ColaDLMPipeline":
        """
        Loads a pipeline from a diffusers-format folder (`model_index.json`) or from the official release layout
        (`cola_dlm/cola_dit`, `cola_dlm/cola_vae`, `tokenizer.json`), local or a Hub repo id.

        Keyword arguments are those of [`~diffusers.DiffusionPipeline.from_pretrained`]; `dtype` also applies to
        the official layout.
        """
        folder = str(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            folder = snapshot_download(
                folder,
                revision=kwargs.pop("revision", None),
                cache_dir=kwargs.pop("cache_dir", None),
                token=kwargs.pop("token", None),
                local_files_only=kwargs.pop("local_files_only", False),
            )
        if is_official_layout(folder):
            if kwargs.get("device_map") is not None:
                raise ValueError(
                    "`device_map` is not supported for the official layout; convert it once with "
                    "scripts/convert_cola_dlm_to_diffusers.py, or load it and call `.to(device)`."
                )
            dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
            return cls.from_official_checkpoint(folder, dtype=dtype)
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise FileNotFoundError(
                f"{folder} holds neither a diffusers pipeline (`model_index.json`) nor the official Cola-DLM layout "
                f"(`{OFFICIAL_DIT_FOLDER}`, `{OFFICIAL_VAE_FOLDER}`, `{OFFICIAL_TOKENIZER_FILE}`)."
            )
        return super().from_pretrained(folder, **kwargs)

    @classmethod
    def from_official_checkpoint(
        cls, folder: str, dtype: torch.dtype | dict[str, torch.dtype] | None = None
    ) -> "ColaDLMPipeline":
        """
        Builds the pipeline from a folder in the official release layout, with weights in `dtype`: one dtype, or a
        dict by component name (`"transformer"`, `"vae"`) with an optional `"default"`.
        """
        if isinstance(dtype, dict):
            transformer_dtype = dtype.get("transformer", dtype.get("default"))
            vae_dtype = dtype.get("vae", dtype.get("default"))
        else:
            transformer_dtype = vae_dtype = dtype
        return cls(
            transformer=load_official_transformer(os.path.join(folder, OFFICIAL_DIT_FOLDER), transformer_dtype),
            vae=load_official_vae(os.path.join(folder, OFFICIAL_VAE_FOLDER), vae_dtype),
            scheduler=FlowMatchBlockCausalScheduler(),
            tokenizer=load_tokenizer(os.path.join(folder, OFFICIAL_TOKENIZER_FILE)),
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
        pad_token_id,
        stop,
        output_type,
        callback_on_step_end_tensor_inputs,
    ):
        if (prompt is None) == (messages is None):
            raise ValueError("Pass exactly one of `prompt` and `messages`.")
        if prompt is not None:
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(prompts, list) or len(prompts) == 0:
                raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
            for index, text in enumerate(prompts):
                if not isinstance(text, str):
                    raise ValueError(f"`prompt[{index}]` must be a string, got {type(text).__name__}.")
                if not text:
                    raise ValueError(f"`prompt[{index}]` is empty; every prompt needs at least one token.")
        if messages is not None and not (
            isinstance(messages, list) and messages and all(isinstance(m, (dict, list)) for m in messages)
        ):
            raise ValueError(
                "`messages` must be a non-empty list of {'role', 'content'} dicts, or a list of such lists."
            )
        if not isinstance(gen_length, int) or gen_length < 1:
            raise ValueError(f"`gen_length` must be an integer >= 1, got {gen_length!r}.")
        if not isinstance(block_length, int) or block_length < 1:
            raise ValueError(f"`block_length` must be an integer >= 1, got {block_length!r}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}.")
        if guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be >= 0, got {guidance_scale}.")
        if temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {temperature}.")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be an integer >= 1 or None, got {top_k!r}.")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1] or None, got {top_p}.")
        if repetition_penalty <= 0:
            raise ValueError(f"`repetition_penalty` must be > 0, got {repetition_penalty}.")
        if pad_token_id is None:
            raise ValueError("`pad_token_id` is required: the tokenizer has no `<|pad|>` token, pass one explicitly.")
        if stop is not None and not all(isinstance(text, str) and text for text in stop):
            raise ValueError(f"`stop` must be a non-empty string or a list of non-empty strings, got {stop!r}.")
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
        self, prompt: str | list[str] | None = None, messages: list[dict] | list[list[dict]] | None = None
    ) -> list[list[int]]:
        """
        Token ids of every prompt. `messages` follow the release's ChatML convention for SFT checkpoints:
        `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, then `<|im_start|>assistant\\n`.
        """
        if prompt is not None:
            prompts = [prompt] if isinstance(prompt, str) else prompt
            return self.tokenizer(prompts, add_special_tokens=True)["input_ids"]

        vocab = self.tokenizer.get_vocab()
        if IM_START_TOKEN not in vocab or IM_END_TOKEN not in vocab:
            raise ValueError(f"`messages` need a tokenizer with `{IM_START_TOKEN}` and `{IM_END_TOKEN}` tokens.")
        conversations = [messages] if isinstance(messages[0], dict) else messages

        def encode(text):
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

        token_ids = []
        for conversation in conversations:
            ids = []
            for message in conversation:
                if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
                    raise ValueError(f"Every message needs a 'role' and a 'content', got {message!r}.")
                ids += [vocab[IM_START_TOKEN], *encode(message["role"]), *encode("\n")]
                ids += [*encode(message["content"]), vocab[IM_END_TOKEN], *encode("\n")]
            token_ids.append(ids + [vocab[IM_START_TOKEN], *encode("assistant"), *encode("\n")])
        return token_ids

    def encode_prompt(
        self,
        prompt_token_ids: list[list[int]],
        block_length: int,
        pad_token_id: int,
        device: torch.device,
        max_sequence_length: int | None = None,
    ) -> tuple[torch.Tensor, torch.LongTensor]:
        """
        Encodes tokenised prompts into normalised latents (posterior means). Prompts of more than
        `max_sequence_length` tokens raise a `ValueError`.

        Every prompt is right-padded with `pad_token_id` to a multiple of `patch_size * block_length` tokens before
        encoding: the pad tokens share the last prompt block and shape its latents, as in training.

        Returns:
            `(prompt_latents, num_prompt_tokens)`: latents `(batch_size, max_latents, latent_dim)`, right-padded,
            and the number of prompt tokens, `(batch_size,)`.
        """
        for index, ids in enumerate(prompt_token_ids):
            if len(ids) == 0:
                raise ValueError(f"`prompt[{index}]` tokenizes to no tokens; every prompt needs at least one.")
            if max_sequence_length is not None and len(ids) > max_sequence_length:
                raise ValueError(
                    f"`prompt[{index}]` has {len(ids)} tokens; at most {max_sequence_length} fit with this "
                    f"`gen_length` (the tokenizer's `model_max_length` is {self.tokenizer.model_max_length})."
                )
        patch_size = self.vae.config.patch_size
        chunk = patch_size * block_length
        padded_lengths = [-(-len(ids) // chunk) * chunk for ids in prompt_token_ids]
        input_ids = torch.full((len(prompt_token_ids), max(padded_lengths)), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, (ids, padded_length) in enumerate(zip(prompt_token_ids, padded_lengths)):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, :padded_length] = 1

        posterior = self.vae.encode(input_ids.to(device), attention_mask.to(device)).latent_dist
        prompt_latents = self.vae.normalize_latents(posterior.mode()).float()
        num_prompt_tokens = torch.tensor([len(ids) for ids in prompt_token_ids], device=device)
        return prompt_latents, num_prompt_tokens

    def prepare_latents(
        self,
        batch_size: int,
        num_latents: int,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The starting noise of every block, `(batch_size, num_blocks * block_length, latent_dim)`, fp32."""
        shape = (batch_size, num_latents, self.transformer.config.in_channels)
        if latents is None:
            return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        if tuple(latents.shape) != shape:
            raise ValueError(
                f"`latents` must have shape {shape} (batch_size, num_blocks * block_length, latent_dim) for this "
                f"request, got {tuple(latents.shape)}."
            )
        return latents.to(device=device, dtype=torch.float32)

    def truncate(
        self, new_token_ids: list[int], stop_token_ids: list[int], stop: list[str] | None
    ) -> tuple[list[int], str, bool]:
        """
        Cuts new tokens at the first stop token (kept) or after the token that completes a stop string.

        Returns:
            `(token_ids, text, stopped)`: the kept tokens, their text without the stop token or stop string, and
            whether a stop token or string was found.
        """
        for index, token_id in enumerate(new_token_ids):
            if token_id in stop_token_ids:
                kept, text_ids, stopped = new_token_ids[: index + 1], new_token_ids[:index], True
                break
        else:
            kept, text_ids, stopped = new_token_ids, new_token_ids, False
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        hits = [(text.find(marker), marker) for marker in stop or [] if marker in text]
        if not hits:
            return kept, text, stopped
        position, marker = min(hits)
        # The fewest tokens whose text contains the stop string.
        low, high = 1, len(text_ids)
        while low < high:
            middle = (low + high) // 2
            if marker in self.tokenizer.decode(text_ids[:middle], skip_special_tokens=True):
                high = middle
            else:
                low = middle + 1
        return text_ids[:low], text[:position], True

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        messages: list[dict] | list[list[dict]] | None = None,
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
        callback_on_step_end: Callable[[int, int, dict], None] | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ColaDLMPipelineOutput | tuple:
        """
        Generates text continuing every prompt.

        Args:
            prompt (`str` or `list[str]`): The prompt(s); each must tokenize to at least one token.
            messages (`list[dict]` or `list[list[dict]]`, *optional*): Chat conversations instead of `prompt`,
                rendered in the release's ChatML convention (`<|im_start|>user ... <|im_end|>`), for SFT checkpoints.
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
    def stream(self, prompt: str | list[str] | None = None, preview_every: int | None = None, **kwargs) -> Iterator[
        ColaDLMStreamChunk
    ]:
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
        preview_every=None,
        streaming=False,
    ) -> Generator[ColaDLMStreamChunk, None, ColaDLMPipelineOutput]:
        """The generation loop behind `__call__` and `stream`; yields chunks only when `streaming`."""
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        block_length = self.transformer.config.block_size if block_length is None else block_length
        pad_token_id = self.pad_token_id if pad_token_id is None else pad_token_id
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
            pad_token_id,
            stop,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        if eos_token_id is None:
            stop_token_ids = self.stop_token_ids
        else:
            stop_token_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if not eos_early_stop:
            stop_token_ids = []
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device
        patch_size = self.vae.config.patch_size

        # 1. Encode the prompts. Whole blocks of prompt latents form the prefix; the rest of the prompt is
        #    repainted into the first generated block, whose tokens for it are trimmed from the output.
        prompt_token_ids = self.tokenize(prompt, messages)
        batch_size = len(prompt_token_ids)
        max_sequence_length = self.tokenizer.model_max_length - gen_length
        prompt_latents, num_prompt_tokens = self.encode_prompt(
            prompt_token_ids, block_length, pad_token_id, device, max_sequence_length
        )
        num_prompt_latents = -(-num_prompt_tokens // patch_size)
        prefix_lengths = num_prompt_latents // block_length * block_length
        num_repainted = num_prompt_latents - prefix_lengths
        num_trimmed_tokens = (num_prompt_tokens - prefix_lengths * patch_size).tolist()
        tokens_per_block = block_length * patch_size
        num_blocks = -(-(max(num_trimmed_tokens) + gen_length) // tokens_per_block)

        # 2. Cache layout: prefixes are left-padded to a common length so that block b of every prompt occupies
        #    the same cache slots [max_prefix + b * block_length, ...) in the DiT and in the VAE decoder.
        max_prefix = int(prefix_lengths.max())
        cache_length = max_prefix + num_blocks * block_length
        position_ids = torch.arange(cache_length, device=device) - (max_prefix - prefix_lengths)[:, None]
        slot_valid = position_ids >= 0
        slots = torch.arange(cache_length, device=device)
        transformer_cache = self.transformer.make_kv_cache(batch_size, cache_length)
        vae_cache = self.vae.make_kv_cache(batch_size, cache_length)

        def context_mask(start: int, end: int, block_size: int) -> torch.Tensor:
            """Mask of the queries in cache slots `[start, end)` over the whole cache (slots >= `end` unwritten)."""
            key_valid = slot_valid & (slots < end)
            return block_causal_mask(position_ids[:, start:end], position_ids, key_valid, block_size, slots[start:end])

        # 3. Prefill both caches with the prefix, clean (t = 0).
        if max_prefix > 0:
            latent_index = position_ids[:, :max_prefix].clamp(min=0)
            prefix = prompt_latents.gather(1, latent_index[..., None].expand(-1, -1, prompt_latents.shape[-1]))
            prefix = prefix * slot_valid[:, :max_prefix, None]
            self.transformer(
                prefix.to(self.transformer.dtype),
                torch.zeros(batch_size, device=device),
                position_ids=position_ids[:, :max_prefix],
                attention_mask=context_mask(0, max_prefix, block_length),
                kv_cache=transformer_cache,
                cache_position=slots[:max_prefix],
            )
            self.vae.decode(
                prefix,
                position_ids=position_ids[:, :max_prefix],
                attention_mask=context_mask(0, max_prefix, self.vae.config.block_size),
                kv_cache=vae_cache,
                cache_position=slots[:max_prefix],
            )

        # 4. The repainted prompt latents of the first block: pinned to the prompt and held at t = 0.
        block_offsets = torch.arange(block_length, device=device)
        repaint_mask = block_offsets < num_repainted[:, None]
        repaint_index = (prefix_lengths[:, None] + block_offsets).clamp(max=prompt_latents.shape[1] - 1)
        repaint_latents = prompt_latents.gather(1, repaint_index[..., None].expand(-1, -1, prompt_latents.shape[-1]))
        # Without a prefix the conditional and unconditional passes coincide: the first block uses scale 1.
        first_block_guidance = torch.where(prefix_lengths > 0, guidance_scale, 1.0)[:, None, None]
        unconditional_position_ids = block_offsets.expand(batch_size, -1)

        latents = self.prepare_latents(batch_size, num_blocks * block_length, generator, device, latents)
        clean_latents = torch.zeros_like(latents)
        tokens = torch.full((batch_size, num_blocks * tokens_per_block), pad_token_id, dtype=torch.long, device=device)
        block_timesteps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        steps_per_block = len(block_timesteps)
        self._num_timesteps = num_blocks * steps_per_block
        num_generated_tokens = 0
        streamed_texts = [""] * batch_size

        def new_token_ids(row: int) -> list[int]:
            start = num_trimmed_tokens[row]
            return tokens[row, start : min(start + gen_length, num_generated_tokens)].tolist()

        # 5. Generate block by block.
        with self.progress_bar(total=num_blocks) as progress_bar:
            for block_index in range(num_blocks):
                offset = max_prefix + block_index * block_length
                block_slice = slice(block_index * block_length, (block_index + 1) * block_length)
                block_slots = slots[offset : offset + block_length]
                block_position_ids = position_ids[:, offset : offset + block_length]
                block_mask = context_mask(offset, offset + block_length, block_length)
                block_latents = latents[:, block_slice]
                pinned = repaint_mask if block_index == 0 else torch.zeros_like(repaint_mask)
                block_latents = torch.where(pinned[..., None], repaint_latents, block_latents)
                guidance = first_block_guidance if block_index == 0 else guidance_scale

                block_timesteps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
                for step_index, t in enumerate(block_timesteps):
                    # Per-position timesteps only where prompt latents are pinned; else one per sample.
                    timestep = torch.where(pinned, 0.0, t) if block_index == 0 else t.expand(batch_size)
                    velocity = self._guided_velocity(
                        block_latents, timestep, t, step_index, steps_per_block, block_position_ids,
                        unconditional_position_ids, block_mask, transformer_cache, block_slots, guidance,
                    )
                    block_latents = self.scheduler.step(velocity, t, block_latents).prev_sample
                    block_latents = torch.where(pinned[..., None], repaint_latents, block_latents)

                    if callback_on_step_end is not None:
                        callback_kwargs = {"latents": block_latents}
                        callback_outputs = callback_on_step_end(
                            self, block_index * steps_per_block + step_index, t, callback_kwargs
                        )
                        block_latents = callback_outputs.pop("latents", block_latents)

                    if streaming and preview_every and (step_index + 1) % preview_every == 0:
                        sigma = t.float() / self.scheduler.config.num_train_timesteps
                        preview = self.vae.decode(
                            block_latents - sigma * velocity,
                            position_ids=block_position_ids,
                            attention_mask=context_mask(offset, offset + block_length, self.vae.config.block_size),
                            kv_cache=vae_cache,
                            cache_position=block_slots,
                        ).logits.argmax(-1)
                        yield ColaDLMStreamChunk(
                            block_index=block_index,
                            step_index=step_index,
                            token_ids=preview.tolist(),
                            texts=self.tokenizer.batch_decode(preview, skip_special_tokens=True),
                            finished=[False] * batch_size,
                            is_preview=True,
                        )

                # Decode the clean block (appending it to the decoder cache) and sample its tokens.
                clean_latents[:, block_slice] = block_latents
                logits = self.vae.decode(
                    block_latents,
                    position_ids=block_position_ids,
                    attention_mask=context_mask(offset, offset + block_length, self.vae.config.block_size),
                    kv_cache=vae_cache,
                    cache_position=block_slots,
                ).logits
                token_slice = slice(block_index * tokens_per_block, (block_index + 1) * tokens_per_block)
                tokens[:, token_slice] = sample_tokens(
                    logits,
                    history=tokens[:, : token_slice.start],
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    repetition_penalty=repetition_penalty,
                    generator=generator,
                )
                num_generated_tokens = token_slice.stop
                progress_bar.update()

                results = [self.truncate(new_token_ids(row), stop_token_ids, stop) for row in range(batch_size)]
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
                        token_ids=tokens[:, token_slice].tolist(),
                        texts=chunk_texts,
                        finished=finished,
                        is_preview=False,
                    )
                if all(finished) or self.interrupt:
                    break
                # Commit the clean block to the DiT cache for the blocks that follow.
                if block_index + 1 < num_blocks:
                    self.transformer(
                        block_latents.to(self.transformer.dtype),
                        torch.zeros(batch_size, device=device),
                        position_ids=block_position_ids,
                        attention_mask=block_mask,
                        kv_cache=transformer_cache,
                        cache_position=block_slots,
                    )

        # 6. Trim the repainted prompt tokens, cut at the first stop, pad to `gen_length`.
        sequences = torch.full((batch_size, gen_length), pad_token_id, dtype=torch.long, device=device)
        texts = []
        for row, (kept, text, _) in enumerate(results):
            sequences[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
            texts.append(text)
        self.maybe_free_model_hooks()
        return ColaDLMPipelineOutput(
            sequences=sequences,
            texts=texts if output_type == "text" else None,
            latents=clean_latents if output_type == "latent" else None,
        )

    def _guided_velocity(
        self,
        block_latents: torch.Tensor,
        timestep: torch.Tensor,
        t: torch.Tensor,
        step_index: int,
        num_steps: int,
        position_ids: torch.LongTensor,
        unconditional_position_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        kv_cache,
        cache_position: torch.LongTensor,
        guidance: torch.Tensor | float,
    ) -> torch.Tensor:
        """
        The guided velocity of one step. The conditional branch (block + cached context) and, where guidance needs
        it, the unconditional branch (the block alone, positions from 0) run as one batched DiT pass.
        """
        if self.guider is not None:
            self.guider.set_state(step=step_index, num_inference_steps=num_steps, timestep=t)
            guider_batches = self.guider.prepare_inputs({})
            with_unconditional = len(guider_batches) == 2
        else:
            with_unconditional = self.guidance_scale != 1.0

        model_input = block_latents.to(self.transformer.dtype)
        if with_unconditional:
            model_input, timestep = torch.cat([model_input] * 2), torch.cat([timestep] * 2)
            position_ids = torch.cat([position_ids, unconditional_position_ids])
        velocity = self.transformer(
            model_input,
            timestep,
            position_ids=position_ids,
            attention_mask=attention_mask,
            kv_cache=kv_cache,
            cache_position=cache_position,
        ).sample.float()
        predictions = velocity.chunk(2) if with_unconditional else (velocity,)

        if self.guider is not None:
            for batch, prediction in zip(guider_batches, predictions):
                batch.noise_pred = prediction
            return self.guider(guider_batches).pred
        if not with_unconditional:
            return velocity
        velocity_cond, velocity_uncond = predictions
        return velocity_uncond + guidance * (velocity_cond - velocity_uncond)
