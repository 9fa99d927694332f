"""The steps of Cola-DLM generation, shared by [`ColaDLMPipeline`] and the modular [`ColaDLMBlocks`]."""

import functools
import inspect
from dataclasses import dataclass

import torch
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from ...models.attention_cola import ColaKVCache, block_causal_mask
from ...models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ...models.transformers.transformer_cola import ColaTimestepModulation, ColaTransformer1DModel
from .chat import CHAT_FORMATS, ChatFormat
from .sampling import sample_tokens


PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
IM_END_TOKEN = "<|im_end|>"
# The context of the released checkpoint's OLMo 2 tokenizer, for checkpoints that record no `model_max_length`.
DEFAULT_MAX_SEQUENCE_LENGTH = 4096
# What transformers sets `model_max_length` to when a tokenizer records none (`VERY_LARGE_INTEGER`, 1e30).
UNSET_MODEL_MAX_LENGTH = int(1e29)


class PromptTooLongError(ValueError):
    """A prompt that does not fit in the maximum sequence length with the requested new tokens."""


def check_generation_inputs(
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
):
    """Raises a `ValueError` for an invalid generation argument."""
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
        raise ValueError("`messages` must be a non-empty list of {'role', 'content'} dicts, or a list of such lists.")
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
    if stop is not None and not all(isinstance(text, str) and text for text in stop):
        raise ValueError(f"`stop` must be a non-empty string or a list of non-empty strings, got {stop!r}.")


def check_pad_token_id(pad_token_id):
    if pad_token_id is None:
        raise ValueError("`pad_token_id` is required: the tokenizer has no `<|pad|>` token, pass one explicitly.")


def check_length_and_chat_inputs(messages, chat_format, gen_length, max_sequence_length):
    """Raises a `ValueError` for an invalid `chat_format` or `max_sequence_length`."""
    if chat_format is not None and messages is None:
        raise ValueError("`chat_format` applies to `messages`; pass `messages` or leave `chat_format` unset.")
    if chat_format is not None and chat_format not in CHAT_FORMATS:
        raise ValueError(f"`chat_format` must be one of {list(CHAT_FORMATS)}, got {chat_format!r}.")
    if max_sequence_length is not None:
        if not isinstance(max_sequence_length, int) or max_sequence_length < 2:
            raise ValueError(f"`max_sequence_length` must be an integer >= 2, got {max_sequence_length!r}.")
        if isinstance(gen_length, int) and gen_length >= max_sequence_length:
            raise PromptTooLongError(
                f"`gen_length` ({gen_length}) leaves no room for a prompt in `max_sequence_length` "
                f"({max_sequence_length})."
            )


def get_stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's `<|endoftext|>` and `<|im_end|>` tokens, where it has them."""
    vocab = tokenizer.get_vocab()
    return [vocab[token] for token in (EOS_TOKEN, IM_END_TOKEN) if token in vocab]


def resolve_stop_token_ids(
    tokenizer: PreTrainedTokenizerBase, eos_token_id: int | list[int] | None, eos_early_stop: bool
) -> list[int]:
    """The stop tokens of a request: `eos_token_id`, by default the tokenizer's; none without `eos_early_stop`."""
    if eos_token_id is None:
        stop_token_ids = get_stop_token_ids(tokenizer)
    else:
        stop_token_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return stop_token_ids if eos_early_stop else []


def chat_stop_token_id(tokenizer: PreTrainedTokenizerBase, chat: ChatFormat) -> int | None:
    """The id of the token that ends a turn in `chat`, where the tokenizer has it as one token."""
    if chat.stop_token is None:
        return None
    ids = tokenizer(chat.stop_token, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def resolve_stops(
    tokenizer: PreTrainedTokenizerBase,
    stop: list[str] | None,
    eos_token_id: int | list[int] | None,
    eos_early_stop: bool,
    chat: ChatFormat | None = None,
    turn_stop_token_id: int | None = None,
) -> tuple[list[int], list[str] | None]:
    """
    The stop tokens and stop strings of a request: [`resolve_stop_token_ids`] and `stop`; a chat request in the
    format `chat` adds the format's stop strings and `turn_stop_token_id`, the token that ends a turn.
    """
    stop_token_ids = resolve_stop_token_ids(tokenizer, eos_token_id, eos_early_stop)
    stop = list(stop or [])
    if chat is not None:
        stop += [marker for marker in chat.stop if marker not in stop]
        if eos_early_stop and eos_token_id is None and turn_stop_token_id not in (None, *stop_token_ids):
            stop_token_ids.append(turn_stop_token_id)
    return stop_token_ids, stop or None


def max_sequence_length(tokenizer: PreTrainedTokenizerBase) -> int:
    """
    The longest prompt plus new tokens: the tokenizer's `model_max_length` where the checkpoint records one, else
    [`DEFAULT_MAX_SEQUENCE_LENGTH`] (the release ships a bare `tokenizer.json`, which records none).
    """
    length = tokenizer.model_max_length
    return DEFAULT_MAX_SEQUENCE_LENGTH if length is None or length >= UNSET_MODEL_MAX_LENGTH else int(length)


@functools.lru_cache(maxsize=8)
def max_token_characters(tokenizer: PreTrainedTokenizerBase) -> int:
    """The most characters one token stands for: its longest vocabulary entry (one character per byte in BPE)."""
    return max(map(len, tokenizer.get_vocab()))


def check_prompt_characters(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_tokens: int):
    """Refuses, without tokenising, a prompt with more characters than `max_tokens` tokens can stand for."""
    max_characters = max_tokens * max_token_characters(tokenizer)
    for index, text in enumerate(prompts):
        if len(text) > max_characters:
            raise PromptTooLongError(
                f"`prompt[{index}]` has {len(text)} characters, more than the {max_tokens} prompt tokens that fit "
                f"can hold; shorten it or lower the number of new tokens."
            )


def tokenize(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_tokens: int | None = None) -> list[list[int]]:
    """
    Token ids of every prompt, as `tokenizers.Tokenizer.encode` gives them. A prompt that tokenizes to nothing or,
    with `max_tokens`, to more than `max_tokens` tokens raises a `ValueError` (a [`PromptTooLongError`]).
    """
    if max_tokens is not None:
        check_prompt_characters(tokenizer, prompts, max_tokens)
    token_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    for index, ids in enumerate(token_ids):
        if len(ids) == 0:
            raise ValueError(f"`prompt[{index}]` tokenizes to no tokens; every prompt needs at least one.")
        if max_tokens is not None and len(ids) > max_tokens:
            raise PromptTooLongError(
                f"`prompt[{index}]` has {len(ids)} tokens; at most {max_tokens} fit with the requested new tokens."
            )
    return token_ids


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict] | list[list[dict]], chat_format: ChatFormat
) -> list[str]:
    """The prompt text of every conversation, rendered by the chat template of `chat_format`."""
    missing = [token for token in chat_format.required_tokens if token not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"This chat format needs a tokenizer with the tokens {missing}; pick another `chat_format`.")
    conversations = [messages] if isinstance(messages[0], dict) else messages
    texts = []
    for conversation in conversations:
        for message in conversation:
            if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
                raise ValueError(f"Every message needs a 'role' and a 'content', got {message!r}.")
            if not isinstance(message["content"], str):
                raise ValueError(f"A message's 'content' must be a string, got {type(message['content']).__name__}.")
        try:
            texts.append(
                tokenizer.apply_chat_template(
                    conversation, chat_template=chat_format.template, tokenize=False, add_generation_prompt=True
                )
            )
        except TemplateError as error:
            raise ValueError(f"`messages` cannot be rendered: {error}") from error
    return texts


def encode_prompt(
    vae: AutoencoderKLColaText,
    prompt_token_ids: list[list[int]],
    block_length: int,
    pad_token_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.LongTensor]:
    """
    Encodes tokenised prompts into normalised latents (posterior means).

    Every prompt is right-padded with `pad_token_id` to a multiple of `patch_size * block_length` tokens before
    encoding: the pad tokens share the last prompt block and shape its latents, as in training.

    Returns:
        `(prompt_latents, num_prompt_tokens)`: latents `(batch_size, max_latents, latent_dim)`, right-padded,
        and the number of prompt tokens, `(batch_size,)`.
    """
    patch_size = vae.config.patch_size
    chunk = patch_size * block_length
    padded_lengths = [-(-len(ids) // chunk) * chunk for ids in prompt_token_ids]
    input_ids = torch.full((len(prompt_token_ids), max(padded_lengths)), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, (ids, padded_length) in enumerate(zip(prompt_token_ids, padded_lengths)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, :padded_length] = 1

    posterior = vae.encode(input_ids.to(device), attention_mask.to(device)).latent_dist
    prompt_latents = vae.normalize_latents(posterior.mode()).float()
    num_prompt_tokens = torch.tensor([len(ids) for ids in prompt_token_ids], device=device)
    return prompt_latents, num_prompt_tokens


def prepare_latents(
    transformer: ColaTransformer1DModel,
    batch_size: int,
    num_latents: int,
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """The starting noise of every block, `(batch_size, num_blocks * block_length, latent_dim)`, fp32."""
    shape = (batch_size, num_latents, transformer.config.in_channels)
    if latents is None:
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    if tuple(latents.shape) != shape:
        raise ValueError(
            f"`latents` must have shape {shape} (batch_size, num_blocks * block_length, latent_dim) for this "
            f"request, got {tuple(latents.shape)}."
        )
    return latents.to(device=device, dtype=torch.float32)


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


def count_blocks(num_prompt_tokens: list[int], gen_length: int, block_length: int, patch_size: int) -> int:
    """
    The blocks a request generates: enough for `gen_length` new tokens after the prompt tokens that the first block
    re-emits (those past the prompts' last whole block).
    """
    prefix_lengths = [-(-length // patch_size) // block_length * block_length for length in num_prompt_tokens]
    num_trimmed_tokens = [length - prefix * patch_size for length, prefix in zip(num_prompt_tokens, prefix_lengths)]
    return -(-(max(num_trimmed_tokens) + gen_length) // (block_length * patch_size))


def _gather_latents(latents: torch.Tensor, index: torch.LongTensor) -> torch.Tensor:
    return latents.gather(1, index[..., None].expand(-1, -1, latents.shape[-1]))


@dataclass
class ColaDLMBlock:
    """
    One generated block: its latents and tokens in the request's buffers, its cache slots and positions, the
    attention masks of the DiT and of the VAE decoder, and the repainted prompt latents pinned in it.

    Args:
        index (`int`): The block's index among the generated blocks.
        latent_slice (`slice`), token_slice (`slice`): The block's latents and tokens in the request's buffers.
        cache_position (`torch.LongTensor` of shape `(block_length,)`): The block's cache slots.
        position_ids (`torch.LongTensor` of shape `(batch_size, block_length)`): The block's positions.
        unconditional_position_ids (`torch.LongTensor`): Positions of the unconditional branch, from 0.
        attention_mask (`torch.BoolTensor`), decoder_attention_mask (`torch.BoolTensor`): The block's masks over
            the cache in the DiT and in the VAE decoder.
        pinned (`torch.BoolTensor` of shape `(batch_size, block_length)`): Where prompt latents are repainted.
        repaint_latents (`torch.Tensor` of shape `(batch_size, block_length, latent_dim)`): The repainted latents.
        guidance_scale (`float`): The request's guidance scale; 1 runs the conditional branch only.
        guidance (`torch.Tensor` or `float`): The scale of every prompt in this block.
    """

    index: int
    latent_slice: slice
    token_slice: slice
    cache_position: torch.LongTensor
    position_ids: torch.LongTensor
    unconditional_position_ids: torch.LongTensor
    attention_mask: torch.BoolTensor
    decoder_attention_mask: torch.BoolTensor
    pinned: torch.BoolTensor
    repaint_latents: torch.Tensor
    guidance_scale: float
    guidance: torch.Tensor | float

    def repaint(self, latents: torch.Tensor) -> torch.Tensor:
        """Pins the repainted prompt latents into `latents` of the block."""
        return torch.where(self.pinned[..., None], self.repaint_latents, latents)


@dataclass
class ColaDLMLayout:
    """
    Where the prompts and the generated blocks of a request sit in the key/value caches of the DiT and of the VAE
    decoder.

    Whole blocks of prompt latents form each prompt's prefix; the rest of the prompt is repainted into the first
    generated block, whose tokens for it are trimmed from the output. Prefixes are left-padded to a common length so
    that block `b` of every prompt occupies the same cache slots `[max_prefix + b * block_length, ...)`.
    """

    block_length: int
    decoder_block_size: int
    tokens_per_block: int
    num_blocks: int
    max_prefix: int
    prefix_lengths: torch.LongTensor
    num_trimmed_tokens: list[int]
    position_ids: torch.LongTensor
    slot_valid: torch.BoolTensor
    slots: torch.LongTensor
    repaint_mask: torch.BoolTensor
    repaint_latents: torch.Tensor

    @classmethod
    def from_prompts(
        cls,
        prompt_latents: torch.Tensor,
        num_prompt_tokens: torch.LongTensor,
        gen_length: int,
        block_length: int,
        patch_size: int,
        decoder_block_size: int,
    ) -> "ColaDLMLayout":
        """The layout of prompts encoded by [`encode_prompt`] that generate `gen_length` new tokens each."""
        device = num_prompt_tokens.device
        num_prompt_latents = -(-num_prompt_tokens // patch_size)
        prefix_lengths = num_prompt_latents // block_length * block_length
        num_repainted = num_prompt_latents - prefix_lengths
        num_trimmed_tokens = (num_prompt_tokens - prefix_lengths * patch_size).tolist()
        tokens_per_block = block_length * patch_size
        num_blocks = count_blocks(num_prompt_tokens.tolist(), gen_length, block_length, patch_size)
        max_prefix = int(prefix_lengths.max())
        cache_length = max_prefix + num_blocks * block_length
        position_ids = torch.arange(cache_length, device=device) - (max_prefix - prefix_lengths)[:, None]
        block_offsets = torch.arange(block_length, device=device)
        repaint_index = (prefix_lengths[:, None] + block_offsets).clamp(max=prompt_latents.shape[1] - 1)
        return cls(
            block_length=block_length,
            decoder_block_size=decoder_block_size,
            tokens_per_block=tokens_per_block,
            num_blocks=num_blocks,
            max_prefix=max_prefix,
            prefix_lengths=prefix_lengths,
            num_trimmed_tokens=num_trimmed_tokens,
            position_ids=position_ids,
            slot_valid=position_ids >= 0,
            slots=torch.arange(cache_length, device=device),
            repaint_mask=block_offsets < num_repainted[:, None],
            repaint_latents=_gather_latents(prompt_latents, repaint_index),
        )

    @property
    def batch_size(self) -> int:
        return self.position_ids.shape[0]

    @property
    def cache_length(self) -> int:
        return self.slots.shape[0]

    def context_mask(self, start: int, end: int, block_size: int) -> torch.Tensor:
        """Mask of the queries in cache slots `[start, end)` over the whole cache (slots >= `end` unwritten)."""
        key_valid = self.slot_valid & (self.slots < end)
        return block_causal_mask(
            self.position_ids[:, start:end], self.position_ids, key_valid, block_size, self.slots[start:end]
        )

    def empty_tokens(self, pad_token_id: int) -> torch.LongTensor:
        """A `(batch_size, num_blocks * tokens_per_block)` buffer of pad tokens for the sampled tokens."""
        shape = (self.batch_size, self.num_blocks * self.tokens_per_block)
        return torch.full(shape, pad_token_id, dtype=torch.long, device=self.slots.device)

    def block(self, block_index: int, guidance_scale: float) -> ColaDLMBlock:
        """The generated block `block_index`; only the first one holds repainted prompt latents."""
        start = self.max_prefix + block_index * self.block_length
        end = start + self.block_length
        first = block_index == 0
        # Without a prefix the conditional and unconditional passes coincide: the first block uses scale 1.
        guidance = guidance_scale
        if first:
            guidance = torch.where(self.prefix_lengths > 0, guidance_scale, 1.0)[:, None, None]
        block_offsets = torch.arange(self.block_length, device=self.slots.device)
        return ColaDLMBlock(
            index=block_index,
            latent_slice=slice(block_index * self.block_length, (block_index + 1) * self.block_length),
            token_slice=slice(block_index * self.tokens_per_block, (block_index + 1) * self.tokens_per_block),
            cache_position=self.slots[start:end],
            position_ids=self.position_ids[:, start:end],
            unconditional_position_ids=block_offsets.expand(self.batch_size, -1),
            attention_mask=self.context_mask(start, end, self.block_length),
            decoder_attention_mask=self.context_mask(start, end, self.decoder_block_size),
            pinned=self.repaint_mask if first else torch.zeros_like(self.repaint_mask),
            repaint_latents=self.repaint_latents,
            guidance_scale=guidance_scale,
            guidance=guidance,
        )


def prefill_caches(
    transformer: ColaTransformer1DModel,
    vae: AutoencoderKLColaText,
    layout: ColaDLMLayout,
    prompt_latents: torch.Tensor,
) -> tuple[ColaKVCache, ColaKVCache]:
    """Makes the DiT and VAE decoder caches of a request and prefills both with the clean prefixes (t = 0)."""
    transformer_cache = transformer.make_kv_cache(layout.batch_size, layout.cache_length)
    vae_cache = vae.make_kv_cache(layout.batch_size, layout.cache_length)
    max_prefix = layout.max_prefix
    if max_prefix > 0:
        position_ids = layout.position_ids[:, :max_prefix]
        prefix = _gather_latents(prompt_latents, position_ids.clamp(min=0))
        prefix = prefix * layout.slot_valid[:, :max_prefix, None]
        transformer(
            prefix.to(transformer.dtype),
            torch.zeros(1, device=layout.slots.device),
            position_ids=position_ids,
            attention_mask=layout.context_mask(0, max_prefix, layout.block_length),
            kv_cache=transformer_cache,
            cache_position=layout.slots[:max_prefix],
        )
        vae.decode(
            prefix,
            position_ids=position_ids,
            attention_mask=layout.context_mask(0, max_prefix, layout.decoder_block_size),
            kv_cache=vae_cache,
            cache_position=layout.slots[:max_prefix],
        )
    return transformer_cache, vae_cache


def step_modulations(
    transformer: ColaTransformer1DModel, block: ColaDLMBlock, timesteps: torch.Tensor
) -> list[ColaTimestepModulation | None]:
    """
    The DiT's AdaLN terms of every step of a block, computed in one batched pass: the steps then skip the
    modulation linears. In the first block, repainted prompt latents get the terms of t = 0.
    """
    modulation = transformer.timestep_modulation(timesteps.reshape(-1, 1, 1))
    modulations = [modulation[step_index] for step_index in range(len(timesteps))]
    if block.index == 0:
        clean = transformer.timestep_modulation(torch.zeros(1, 1, device=timesteps.device))
        modulations = [step_modulation.where(block.pinned, clean) for step_modulation in modulations]
    return modulations


def guided_velocity(
    transformer: ColaTransformer1DModel,
    guider: BaseGuidance | None,
    block: ColaDLMBlock,
    block_latents: torch.Tensor,
    t: torch.Tensor,
    step_index: int,
    num_steps: int,
    kv_cache: ColaKVCache,
    modulation: ColaTimestepModulation,
) -> torch.Tensor:
    """
    The guided velocity of one step. The conditional branch (block + cached context) and, where guidance needs
    it, the unconditional branch (the block alone, positions from 0) run as one batched DiT pass. A `guider`
    replaces the built-in classifier-free guidance. `modulation` is the step's entry of [`step_modulations`].
    """
    if guider is not None:
        guider.set_state(step=step_index, num_inference_steps=num_steps, timestep=t)
        guider_batches = guider.prepare_inputs({})
        with_unconditional = len(guider_batches) == 2
    else:
        with_unconditional = block.guidance_scale != 1.0

    model_input, position_ids = block_latents.to(transformer.dtype), block.position_ids
    if with_unconditional:
        model_input = torch.cat([model_input] * 2)
        position_ids = torch.cat([position_ids, block.unconditional_position_ids])
        # The first block's per-position terms, for both branches.
        if modulation.shape != (1, 1):
            modulation = modulation.repeat(2)
    velocity = transformer(
        model_input,
        position_ids=position_ids,
        attention_mask=block.attention_mask,
        kv_cache=kv_cache,
        cache_position=block.cache_position,
        modulation=modulation,
    ).sample.float()
    predictions = velocity.chunk(2) if with_unconditional else (velocity,)

    if guider is not None:
        for batch, prediction in zip(guider_batches, predictions):
            batch.noise_pred = prediction
        return guider(guider_batches).pred
    if not with_unconditional:
        return velocity
    velocity_cond, velocity_uncond = predictions
    return velocity_uncond + block.guidance * (velocity_cond - velocity_uncond)


def denoise_step(
    transformer: ColaTransformer1DModel,
    scheduler: SchedulerMixin,
    guider: BaseGuidance | None,
    block: ColaDLMBlock,
    block_latents: torch.Tensor,
    t: torch.Tensor,
    step_index: int,
    num_steps: int,
    kv_cache: ColaKVCache,
    modulation: ColaTimestepModulation,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One scheduler step of a block, prompt latents kept pinned; returns the new latents and the velocity."""
    velocity = guided_velocity(
        transformer, guider, block, block_latents, t, step_index, num_steps, kv_cache, modulation
    )
    block_latents = scheduler.step(velocity, t, block_latents).prev_sample
    return block.repaint(block_latents), velocity


def decode_logits(
    vae: AutoencoderKLColaText, block: ColaDLMBlock, latents: torch.Tensor, kv_cache: ColaKVCache
) -> torch.Tensor:
    """Decoder logits of a block's latents; writes the block's keys and values into the decoder cache."""
    return vae.decode(
        latents,
        position_ids=block.position_ids,
        attention_mask=block.decoder_attention_mask,
        kv_cache=kv_cache,
        cache_position=block.cache_position,
    ).logits


def decode_block(
    vae: AutoencoderKLColaText,
    block: ColaDLMBlock,
    block_latents: torch.Tensor,
    kv_cache: ColaKVCache,
    tokens: torch.LongTensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float,
    generator: torch.Generator | list[torch.Generator] | None,
):
    """Decodes a clean block (appending it to the decoder cache) and samples its tokens into `tokens`."""
    logits = decode_logits(vae, block, block_latents, kv_cache)
    tokens[:, block.token_slice] = sample_tokens(
        logits,
        history=tokens[:, : block.token_slice.start],
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        generator=generator,
    )


def commit_block(
    transformer: ColaTransformer1DModel, block: ColaDLMBlock, block_latents: torch.Tensor, kv_cache: ColaKVCache
):
    """Writes a clean block (t = 0) into the DiT cache for the blocks that follow."""
    transformer(
        block_latents.to(transformer.dtype),
        torch.zeros(1, device=block.cache_position.device),
        position_ids=block.position_ids,
        attention_mask=block.attention_mask,
        kv_cache=kv_cache,
        cache_position=block.cache_position,
    )


def truncate(
    tokenizer: PreTrainedTokenizerBase, new_token_ids: list[int], stop_token_ids: list[int], stop: list[str] | None
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
    text = tokenizer.decode(text_ids, skip_special_tokens=True)
    hits = [(text.find(marker), marker) for marker in stop or [] if marker in text]
    if not hits:
        return kept, text, stopped
    position, marker = min(hits)
    # The fewest tokens whose text contains the stop string.
    low, high = 1, len(text_ids)
    while low < high:
        middle = (low + high) // 2
        if marker in tokenizer.decode(text_ids[:middle], skip_special_tokens=True):
            high = middle
        else:
            low = middle + 1
    return text_ids[:low], text[:position], True


def truncate_new_tokens(
    tokenizer: PreTrainedTokenizerBase,
    tokens: torch.LongTensor,
    layout: ColaDLMLayout,
    num_generated_tokens: int,
    gen_length: int,
    stop_token_ids: list[int],
    stop: list[str] | None,
) -> list[tuple[list[int], str, bool]]:
    """[`truncate`] of every prompt's new tokens: those sampled after its trimmed prompt tokens, up to `gen_length`."""
    results = []
    for row, start in enumerate(layout.num_trimmed_tokens):
        new_token_ids = tokens[row, start : min(start + gen_length, num_generated_tokens)].tolist()
        results.append(truncate(tokenizer, new_token_ids, stop_token_ids, stop))
    return results


def pad_sequences(
    results: list[tuple[list[int], str, bool]], gen_length: int, pad_token_id: int, device: torch.device
) -> tuple[torch.LongTensor, list[str]]:
    """The kept tokens of every prompt padded to `gen_length`, `(batch_size, gen_length)`, and their texts."""
    sequences = torch.full((len(results), gen_length), pad_token_id, dtype=torch.long, device=device)
    texts = []
    for row, (kept, text, _) in enumerate(results):
        sequences[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        texts.append(text)
    return sequences, texts
