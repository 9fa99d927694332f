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

"""Reads the official Cola-DLM release layout (`cola_dlm/cola_dit`, `cola_dlm/cola_vae`, `tokenizer.json`)."""

import json
import os
import re

import torch
from accelerate import init_empty_weights
from diffusers.utils.import_utils import compare_versions
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ..models.transformers.transformer_cola import ColaTransformer1DModel
from ..schedulers.scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler
from .checks import check_loaded_weights, check_pipeline_folder
from .dtypes import component_dtype, resolve_dtype
from .hub import hub_download_kwargs, official_snapshot
from .layout import OFFICIAL_DIT_FOLDER, OFFICIAL_TOKENIZER_FILE, OFFICIAL_VAE_FOLDER, is_official_layout
from .tokenizer import DEFAULT_MAX_SEQUENCE_LENGTH, load_tokenizer


# (official key pattern, our key template); patterns are matched in full.
_DIT_KEY_MAP = [
    (r"emb_in\.proj_in\.(weight|bias)", r"timestep_embedder.linear_1.\1"),
    (r"emb_in\.proj_hid\.(weight|bias)", r"timestep_embedder.linear_2.\1"),
    (r"emb_in\.proj_out\.(weight|bias)", r"timestep_embedder.linear_3.\1"),
    (r"txt_in\.proj\.(weight|bias)", r"proj_in.\1"),
    (r"blocks\.(\d+)\.ada\.msa_in\.1\.(weight|bias)", r"transformer_blocks.\1.norm1_modulation.\2"),
    (r"blocks\.(\d+)\.ada\.msa_out\.1\.(weight|bias)", r"transformer_blocks.\1.attn_gate.\2"),
    (r"blocks\.(\d+)\.ada\.mlp_in\.1\.(weight|bias)", r"transformer_blocks.\1.norm2_modulation.\2"),
    (r"blocks\.(\d+)\.ada\.mlp_out\.1\.(weight|bias)", r"transformer_blocks.\1.ff_gate.\2"),
    (r"blocks\.(\d+)\.msa\.proj_qkv\.(weight|bias)", r"transformer_blocks.\1.attn.to_qkv.\2"),
    (r"blocks\.(\d+)\.msa\.norm_q\.(weight|bias)", r"transformer_blocks.\1.attn.norm_q.\2"),
    (r"blocks\.(\d+)\.msa\.norm_k\.(weight|bias)", r"transformer_blocks.\1.attn.norm_k.\2"),
    (r"blocks\.(\d+)\.msa\.proj_out\.(weight|bias)", r"transformer_blocks.\1.attn.to_out.\2"),
    (r"blocks\.(\d+)\.mlp\.proj_in\.(weight|bias)", r"transformer_blocks.\1.ff.proj_in.\2"),
    (r"blocks\.(\d+)\.mlp\.proj_out\.(weight|bias)", r"transformer_blocks.\1.ff.proj_out.\2"),
    (r"txt_out_norm\.(weight|bias)", r"norm_out.\1"),
    (r"txt_out_ada\.out_in\.1\.(weight|bias)", r"norm_out_modulation.\1"),
    (r"txt_out\.proj\.(weight|bias)", r"proj_out.\1"),
]
_DIT_ROPE_KEY = re.compile(r"blocks\.\d+\.msa\.rope\.rope\.freqs")

_VAE_BLOCK_KEY_MAP = [
    (r"qkv_proj", "attn.to_qkv"),
    (r"q_norm", "attn.norm_q"),
    (r"k_norm", "attn.norm_k"),
    (r"attn_out_proj", "attn.to_out"),
    (r"norm_attn", "norm_attn"),
    (r"ffn_proj", "ff.proj_in"),
    (r"ffn_out", "ff.proj_out"),
    (r"norm_ffn", "norm_ff"),
]
_VAE_KEY_MAP = [
    (r"encoder\.wte\.weight", r"encoder.embed_tokens.weight"),
    (r"encoder\.patch_embedder\.(weight|bias)", r"encoder.patch_embed.\1"),
    (r"encoder\.final_layer\.(weight|bias)", r"encoder.proj_out.\1"),
    (r"decoder\.in_layer\.(weight|bias)", r"decoder.proj_in.\1"),
    (r"decoder\.unpatch_layer\.(weight|bias)", r"decoder.unpatchify.\1"),
    (r"decoder\.final_norm\.(weight|bias)", r"decoder.norm_out.\1"),
    (r"decoder\.final_layer\.(weight|bias)", r"decoder.lm_head.\1"),
] + [
    (rf"(encoder|decoder)\.blocks\.(\d+)\.{official}\.(weight|bias)", rf"\1.transformer.blocks.\2.{ours}.\3")
    for official, ours in _VAE_BLOCK_KEY_MAP
]


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The checkpoint is missing `{path}`.")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"`{path}` is not valid JSON: {error}.") from error


def _read_state_dict(folder: str) -> dict[str, torch.Tensor]:
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The checkpoint is missing `{path}`.")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"`{path}` is not a readable safetensors file: {error}.") from error


def _rename(state_dict: dict[str, torch.Tensor], key_map: list[tuple[str, str]], source: str) -> dict:
    renamed = {}
    for key, tensor in state_dict.items():
        for pattern, template in key_map:
            match = re.fullmatch(pattern, key)
            if match:
                renamed[match.expand(template)] = tensor
                break
        else:
            raise ValueError(f"Unexpected weight `{key}` in {source}.")
    return renamed


# Defaults of the official configuration classes (`ColaDiTConfig`, `ColaTextVAEConfig`): a key that a checkpoint's
# `config.json` leaves out takes these values, as it does in the official code.
OFFICIAL_DIT_DEFAULTS = {
    "txt_in_channels": 16,
    "txt_out_channels": 16,
    "txt_dim": 2048,
    "emb_dim": 2048,
    "heads": 16,
    "head_dim": 128,
    "expand_ratio": 4,
    "num_layers": 24,
    "norm_eps": 1e-5,
    "qk_bias": False,
    "patch_size": 1,
    "rope_dim": 96,
    "block_size": 4,
}
OFFICIAL_VAE_DEFAULTS = {
    "vocab_size": 100278,
    "encoder_num_blocks": 4,
    "decoder_num_blocks": 4,
    "dim": 1536,
    "ffn_dim": 6144,
    "latent_dim": 16,
    "patch_size": 1,
    "num_heads": 12,
    "shared_heads_kv": 1,
    "encoder_last_ln": True,
    "layer_norm_type": "layer_norm",
    "layer_norm_eps": 1e-6,
    "layer_norm_affine": True,
    "post_norm": True,
    "qk_bias": False,
    "qk_norm": True,
    "qk_norm_affine": True,
    "clip_qkv": None,
    "rope_theta": 500000,
    "rope_full_precision": True,
    "bias": True,
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "act": "swiglu",
    "causal": False,
    "block_causal": True,
    "block_size": 4,
    "use_variation": True,
    "use_emb": True,
    "scaling_factor": 1.0,
    "shifting_factor": 0.0,
}
# Official options that our models implement for one value only: any other value is refused, never approximated.
# (Keys the official models do not read, such as `init_std` or `architectures`, are ignored as they are there.)
_DIT_FIXED_OPTIONS = {"patch_size": 1}
_VAE_FIXED_OPTIONS = {
    "act": "swiglu",
    "layer_norm_type": "layer_norm",
    "shared_heads_kv": 1,
    "clip_qkv": None,
    "rope_full_precision": True,
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "causal": False,
    "block_causal": True,
    "use_variation": True,
    "use_emb": True,
}


def _with_defaults(config: dict, defaults: dict, fixed_options: dict, model_type: str, name: str) -> dict:
    if config.get("model_type") != model_type:
        raise ValueError(
            f"Expected an official {name} config with `model_type: {model_type}`, got {config.get('model_type')!r}."
        )
    config = {**defaults, **config}
    for key, accepted in fixed_options.items():
        if config[key] != accepted:
            raise ValueError(
                f"The official {name} option `{key}={config[key]!r}` is not supported: cola-diffusers implements "
                f"only `{key}={accepted!r}` and refuses to load an approximation."
            )
    return config


def transformer_config_from_official(config: dict) -> dict:
    """Maps an official `cola_dit` config to [`ColaTransformer1DModel`] arguments; refuses what it cannot honour."""
    config = _with_defaults(config, OFFICIAL_DIT_DEFAULTS, _DIT_FIXED_OPTIONS, "cola_dit", "DiT")
    if config["emb_dim"] != config["txt_dim"]:
        raise ValueError(
            f"AdaLN needs `emb_dim == txt_dim`, got emb_dim={config['emb_dim']}, txt_dim={config['txt_dim']}."
        )
    return {
        "in_channels": config["txt_in_channels"],
        "out_channels": config["txt_out_channels"],
        "num_layers": config["num_layers"],
        "num_attention_heads": config["heads"],
        "attention_head_dim": config["head_dim"],
        "hidden_size": config["txt_dim"],
        "rope_dim": config["rope_dim"],
        "mlp_ratio": config["expand_ratio"],
        "qkv_bias": config["qk_bias"],
        "norm_eps": config["norm_eps"],
        "block_size": config["block_size"],
    }


def vae_config_from_official(config: dict) -> dict:
    """Maps an official `cola_text_vae` config to [`AutoencoderKLColaText`] arguments; refuses what it can't honour."""
    config = _with_defaults(config, OFFICIAL_VAE_DEFAULTS, _VAE_FIXED_OPTIONS, "cola_text_vae", "VAE")
    return {
        "vocab_size": config["vocab_size"],
        "latent_dim": config["latent_dim"],
        "hidden_size": config["dim"],
        "num_attention_heads": config["num_heads"],
        "ffn_dim": config["ffn_dim"],
        "encoder_num_blocks": config["encoder_num_blocks"],
        "decoder_num_blocks": config["decoder_num_blocks"],
        "patch_size": config["patch_size"],
        "block_size": config["block_size"],
        "bias": config["bias"],
        "qkv_bias": config["qk_bias"],
        "qk_norm": config["qk_norm"],
        "qk_norm_affine": config["qk_norm_affine"],
        "norm_affine": config["layer_norm_affine"],
        "post_norm": config["post_norm"],
        "norm_eps": config["layer_norm_eps"],
        "rope_theta": float(config["rope_theta"]),
        "normalize_mean": config["encoder_last_ln"],
        "scaling_factor": config["scaling_factor"],
        "shifting_factor": config["shifting_factor"],
    }


def official_chat_settings(folder: str) -> dict:
    """
    The chat settings the official SFT script records in a `cola_dlm/cola_dit` config (`sft_chat_format`,
    `sft_stop_token_id`, `sft_pad_with_stop`), as [`ColaDLMPipeline`] arguments; None where it records none.
    """
    config = _read_json(os.path.join(folder, "config.json"))
    return {
        "chat_format": config.get("sft_chat_format"),
        "chat_stop_token_id": config.get("sft_stop_token_id"),
        "chat_pad_with_stop": config.get("sft_pad_with_stop"),
    }


def load_official_transformer(folder: str, dtype: torch.dtype | None = None) -> ColaTransformer1DModel:
    """Builds a [`ColaTransformer1DModel`] from an official `cola_dlm/cola_dit` folder."""
    config = transformer_config_from_official(_read_json(os.path.join(folder, "config.json")))
    state_dict = _read_state_dict(folder)
    with init_empty_weights():
        model = ColaTransformer1DModel(**config)
    # Every official block stores the same RoPE frequencies; the model keeps one copy.
    rope_frequencies = [state_dict.pop(key) for key in list(state_dict) if _DIT_ROPE_KEY.fullmatch(key)]
    if any(not torch.equal(freqs, rope_frequencies[0]) for freqs in rope_frequencies):
        raise ValueError(f"The DiT blocks in {folder} store different RoPE frequencies; expected one shared table.")
    state_dict = _rename(state_dict, _DIT_KEY_MAP, folder)
    if rope_frequencies:
        state_dict["rotary_embedder.inv_freq"] = rope_frequencies[0].float()
    return _load_into(model, state_dict, folder, dtype)


def load_official_vae(folder: str, dtype: torch.dtype | None = None) -> AutoencoderKLColaText:
    """Builds an [`AutoencoderKLColaText`] from an official `cola_dlm/cola_vae` folder."""
    config = vae_config_from_official(_read_json(os.path.join(folder, "config.json")))
    with init_empty_weights():
        model = AutoencoderKLColaText(**config)
    return _load_into(model, _rename(_read_state_dict(folder), _VAE_KEY_MAP, folder), folder, dtype)


def _load_into(model, state_dict: dict[str, torch.Tensor], source: str, dtype: torch.dtype | None):
    """Checks names and shapes, then assigns the weights (parameters cast to `dtype`, buffers kept) to `model`."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    if missing:
        raise ValueError(f"{source} lacks weights {missing[:5]}{' ...' if len(missing) > 5 else ''}.")
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise ValueError(
            f"{source} has weights its config does not use: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}."
        )
    for key, tensor in state_dict.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(
                f"Weight `{key}` in {source} has shape {tuple(tensor.shape)}, the config implies "
                f"{tuple(expected[key].shape)}."
            )
    parameter_names = {name for name, _ in model.named_parameters()}
    if dtype is not None:
        state_dict = {key: t.to(dtype) if key in parameter_names else t for key, t in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def load_official_components(folder: str, dtype: torch.dtype | dict | None = None) -> dict:
    """
    The `ColaDLMPipeline` arguments of a folder in the official release layout, weights in `dtype` (one dtype, or a
    dict by component name with an optional `"default"`): the models, a [`FlowMatchBlockCausalScheduler`], the
    tokenizer with the release's context of 4096 tokens, and the chat settings of the DiT config.
    """
    dit_folder = os.path.join(folder, OFFICIAL_DIT_FOLDER)
    return {
        "transformer": load_official_transformer(dit_folder, component_dtype(dtype, "transformer")),
        "vae": load_official_vae(os.path.join(folder, OFFICIAL_VAE_FOLDER), component_dtype(dtype, "vae")),
        "scheduler": FlowMatchBlockCausalScheduler(),
        "tokenizer": load_tokenizer(os.path.join(folder, OFFICIAL_TOKENIZER_FILE), DEFAULT_MAX_SEQUENCE_LENGTH),
        **official_chat_settings(dit_folder),
    }


class FromOfficialLayoutMixin:
    """
    `from_pretrained` of a pipeline that also reads the official release layout, local or on the Hub, besides the
    diffusers format; mixed into [`ColaDLMPipeline`] before `DiffusionPipeline`.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """
        Loads a pipeline from a diffusers-format folder (`model_index.json`) or from the official release layout
        (`cola_dlm/cola_dit`, `cola_dlm/cola_vae`, `tokenizer.json`), local or a Hub repo id.

        Keyword arguments are those of [`~diffusers.DiffusionPipeline.from_pretrained`]; diffusers repos download
        through diffusers itself. `dtype` (or `torch_dtype`) applies to both layouts: a `torch.dtype`, its name
        (`"bfloat16"`, `"bf16"`, `"float16"`, `"fp16"`, `"float32"`, `"fp32"`), or a dict of those by component name
        with an optional `"default"`.
        """
        if kwargs.get("dtype") is not None and kwargs.get("torch_dtype") is not None:
            raise ValueError("Pass either `dtype` or `torch_dtype`, not both.")
        dtype = resolve_dtype(kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None))
        name = str(pretrained_model_name_or_path)
        kwargs = hub_download_kwargs(name, kwargs)
        folder = official_snapshot(name, **kwargs)
        if folder is not None and is_official_layout(folder):
            if kwargs.get("device_map") is not None:
                raise ValueError(
                    "`device_map` is not supported for the official layout; convert it once with "
                    "scripts/convert_cola_dlm_to_diffusers.py, or load it and call `.to(device)`."
                )
            pipe = cls.from_official_checkpoint(folder, dtype=dtype)
            check_loaded_weights(pipe.components, folder)
            return pipe
        if folder is not None and not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise FileNotFoundError(
                f"{folder} holds neither a diffusers pipeline (`model_index.json`) nor the official Cola-DLM layout "
                f"(`{OFFICIAL_DIT_FOLDER}`, `{OFFICIAL_VAE_FOLDER}`, `{OFFICIAL_TOKENIZER_FILE}`)."
            )
        if folder is not None:
            check_pipeline_folder(folder, {"transformer": ColaTransformer1DModel, "vae": AutoencoderKLColaText})
        if dtype is not None:
            # diffusers reads `dtype` from 0.40 on (and deprecates `torch_dtype`), only `torch_dtype` before.
            kwargs["dtype" if compare_versions("diffusers", ">=", "0.40.0") else "torch_dtype"] = dtype
        pipe = super().from_pretrained(folder or name, **kwargs)
        check_loaded_weights(pipe.components, folder or name)
        return pipe

    @classmethod
    def from_official_checkpoint(cls, folder: str, dtype: torch.dtype | dict[str, torch.dtype] | None = None):
        """
        Builds the pipeline from a folder in the official release layout, with weights in `dtype`: one dtype, or a
        dict by component name (`"transformer"`, `"vae"`) with an optional `"default"`. The tokenizer gets the
        release's context of 4096 tokens; the chat format is the DiT config's `sft_chat_format`, if any.
        """
        return cls(**load_official_components(folder, resolve_dtype(dtype)))
