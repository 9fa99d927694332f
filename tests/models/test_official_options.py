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

"""Every option of the official configs is honoured exactly, takes the official default when absent, or is refused."""

import json
import os

import pytest
import torch

from cola_diffusers.loaders.official_checkpoint import (
    OFFICIAL_VAE_DEFAULTS,
    load_official_transformer,
    load_official_vae,
)

from ..conftest import FIXTURE_DIR, VARIANTS_DIR


def copy_component(source: str, component: str, target, edit) -> str:
    """Copies `cola_dlm/<component>` of an official fixture into `target` with its config edited by `edit`."""
    folder = target / component
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(os.path.join(source, "cola_dlm", component, "model.safetensors"))
    with open(os.path.join(source, "cola_dlm", component, "config.json")) as file:
        config = json.load(file)
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


REFUSED = [
    ("cola_vae", "act", "gelu"),
    ("cola_vae", "layer_norm_type", "rms_norm"),
    ("cola_vae", "shared_heads_kv", 2),
    ("cola_vae", "clip_qkv", 8.0),
    ("cola_vae", "rope_full_precision", False),
    ("cola_vae", "dropout", 0.1),
    ("cola_vae", "attn_dropout", 0.1),
    ("cola_vae", "causal", True),
    ("cola_vae", "block_causal", False),
    ("cola_vae", "use_variation", False),
    ("cola_vae", "use_emb", False),
    ("cola_dit", "patch_size", 2),
]


@pytest.mark.parametrize("component,key,value", REFUSED)
def test_options_without_an_exact_implementation_are_refused(tmp_path, component, key, value):
    folder = copy_component(FIXTURE_DIR, component, tmp_path, lambda config: config.update({key: value}))
    load = load_official_vae if component == "cola_vae" else load_official_transformer
    with pytest.raises(ValueError, match=rf"option `{key}={value!r}` is not supported"):
        load(folder)


def test_absent_vae_options_take_the_official_defaults(tmp_path):
    # Every option the first fixture sets to the official default can be left out of its config.
    def drop_defaults(config):
        for key, default in OFFICIAL_VAE_DEFAULTS.items():
            if key in config and config[key] == default:
                del config[key]

    trimmed = load_official_vae(copy_component(FIXTURE_DIR, "cola_vae", tmp_path, drop_defaults))
    full = load_official_vae(os.path.join(FIXTURE_DIR, "cola_dlm", "cola_vae"))
    assert trimmed.config == full.config
    input_ids = torch.tensor([[5, 9, 70, 3, 44, 8, 1, 2]])
    with torch.no_grad():
        torch.testing.assert_close(trimmed(input_ids).logits, full(input_ids).logits, rtol=0, atol=0)


def test_absent_dit_qk_bias_means_none(tmp_path):
    # The official default is `qk_bias: false`; the variants fixture has the biases, which are then unexpected.
    folder = copy_component(VARIANTS_DIR, "cola_dit", tmp_path, lambda config: config.pop("qk_bias"))
    with pytest.raises(ValueError, match=r"config does not use: \[.transformer_blocks\.0\.attn\.to_out\.bias"):
        load_official_transformer(folder)


def test_vae_bias_option_covers_every_official_layer(tmp_path):
    # `bias: false` drops the biases of the encoder's final layer and the decoder's input and output layers too.
    vae = load_official_vae(os.path.join(VARIANTS_DIR, "cola_dlm", "cola_vae"))
    assert vae.encoder.proj_out.bias is None and vae.decoder.proj_in.bias is None
    assert vae.decoder.lm_head.bias is None and vae.decoder.transformer.blocks[0].ff.proj_in.bias is None
    # The un-patchify projection keeps its bias in the official model whatever `bias` says.
    assert vae.decoder.unpatchify.bias is not None
