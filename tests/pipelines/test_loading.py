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

"""Loading the official layout and the diffusers format, and the errors of broken checkpoints."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.loaders.official_checkpoint import load_official_transformer, load_official_vae

from ..conftest import FIXTURE_DIR, run_script


@pytest.fixture
def official_copy(tmp_path):
    target = tmp_path / "official"
    shutil.copytree(FIXTURE_DIR, target)
    return target


def test_official_layout_loads_with_special_tokens(fixture_pipeline):
    assert fixture_pipeline.transformer.config.block_size == 4
    assert fixture_pipeline.vae.config.scaling_factor == 1.3
    assert fixture_pipeline.vae.config.shifting_factor == 0.1
    assert (fixture_pipeline.pad_token_id, fixture_pipeline.stop_token_ids) == (2, [0, 1])


def test_official_layout_loads_in_bfloat16_with_fp32_rope():
    pipe = ColaDLMPipeline.from_pretrained(FIXTURE_DIR, dtype=torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    assert pipe.transformer.rotary_embedder.inv_freq.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    assert pipe("the river story.", gen_length=4, num_inference_steps=2).sequences.shape == (1, 4)


@pytest.mark.parametrize(
    "relative_path",
    ["cola_dlm/cola_dit/model.safetensors", "cola_dlm/cola_vae/config.json", "tokenizer.json"],
)
def test_missing_official_file_is_named(official_copy, relative_path):
    os.remove(official_copy / relative_path)
    with pytest.raises(FileNotFoundError, match=os.path.basename(relative_path)):
        ColaDLMPipeline.from_pretrained(official_copy)


def test_corrupt_official_weights_are_named(official_copy):
    weights = official_copy / "cola_dlm" / "cola_vae" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors` is not a readable safetensors file"):
        ColaDLMPipeline.from_pretrained(official_copy)


def test_corrupt_official_config_is_named(official_copy):
    (official_copy / "cola_dlm" / "cola_dit" / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="config.json` is not valid JSON"):
        ColaDLMPipeline.from_pretrained(official_copy)


def test_config_that_disagrees_with_weights_is_reported(official_copy):
    config_path = official_copy / "cola_dlm" / "cola_dit" / "config.json"
    config = json.loads(config_path.read_text())
    config["txt_dim"] = config["emb_dim"] = 128
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="has shape .* the config implies"):
        ColaDLMPipeline.from_pretrained(official_copy)


def test_mismatched_vae_and_dit_latent_dims_are_rejected(official_copy):
    config_path = official_copy / "cola_dlm" / "cola_dit" / "config.json"
    config = json.loads(config_path.read_text())
    config["txt_in_channels"] = config["txt_out_channels"] = 4
    config_path.write_text(json.dumps(config))
    weights_path = official_copy / "cola_dlm" / "cola_dit" / "model.safetensors"
    weights = load_file(weights_path)
    weights["txt_in.proj.weight"] = weights["txt_in.proj.weight"][:, :4].contiguous()
    weights["txt_out.proj.weight"] = weights["txt_out.proj.weight"][:4].contiguous()
    weights["txt_out.proj.bias"] = weights["txt_out.proj.bias"][:4].contiguous()
    save_file(weights, weights_path)
    # Each edited component loads on its own: only the combination is refused, naming both sizes.
    transformer = load_official_transformer(str(official_copy / "cola_dlm" / "cola_dit"))
    assert (transformer.config.in_channels, transformer.config.out_channels) == (4, 4)
    assert load_official_vae(str(official_copy / "cola_dlm" / "cola_vae")).config.latent_dim == 8
    message = r"`latent_dim` \(8\) must equal the transformer's `in_channels` and `out_channels` \(4, 4\)"
    with pytest.raises(ValueError, match=message):
        ColaDLMPipeline.from_pretrained(official_copy)


def test_unsupported_official_vae_option_is_named(official_copy):
    config_path = official_copy / "cola_dlm" / "cola_vae" / "config.json"
    config = json.loads(config_path.read_text())
    config["act"] = "gelu"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"VAE option `act='gelu'` is not supported: .* only `act='swiglu'`"):
        ColaDLMPipeline.from_pretrained(official_copy)


def test_folder_with_neither_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a diffusers pipeline"):
        ColaDLMPipeline.from_pretrained(tmp_path)


def test_missing_file_in_diffusers_format(fixture_pipeline, tmp_path):
    fixture_pipeline.save_pretrained(tmp_path)
    os.remove(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(OSError, match="diffusion_pytorch_model"):
        ColaDLMPipeline.from_pretrained(tmp_path)


@pytest.mark.slow
def test_conversion_script_writes_a_loadable_pipeline(tmp_path, monkeypatch, capsys):
    output = tmp_path / "converted"
    arguments = ["--checkpoint_path", FIXTURE_DIR, "--output_path", output, "--dtype", "bf16"]
    assert run_script("convert_cola_dlm_to_diffusers.py", arguments, monkeypatch) == 0
    assert json.loads((output / "model_index.json").read_text())["_class_name"] == "ColaDLMPipeline"
    stored = load_file(output / "transformer" / "diffusion_pytorch_model.safetensors")
    assert stored["proj_in.weight"].dtype == torch.bfloat16
    assert stored["rotary_embedder.inv_freq"].dtype == torch.float32
    pipe = ColaDLMPipeline.from_pretrained(output, dtype=torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16

    capsys.readouterr()
    arguments = ["--checkpoint_path", output, "--output_path", tmp_path / "again"]
    assert run_script("convert_cola_dlm_to_diffusers.py", arguments, monkeypatch) == 2
    assert "is not in the official layout" in capsys.readouterr().err


@pytest.fixture(scope="module")
def diffusers_copy(tmp_path_factory):
    target = tmp_path_factory.mktemp("diffusers")
    ColaDLMPipeline.from_pretrained(FIXTURE_DIR).save_pretrained(target)
    return target


@pytest.mark.parametrize("layout", ["official", "diffusers"])
@pytest.mark.parametrize(
    "dtype,expected",
    [
        (torch.bfloat16, torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("torch.bfloat16", torch.bfloat16),
        ("float16", torch.float16),
        ("fp16", torch.float16),
        ("fp32", torch.float32),
        ({"transformer": "bf16", "default": "float32"}, torch.bfloat16),
    ],
)
def test_dtype_spellings_load_alike_on_both_layouts(layout, dtype, expected, diffusers_copy):
    folder = FIXTURE_DIR if layout == "official" else diffusers_copy
    pipe = ColaDLMPipeline.from_pretrained(folder, dtype=dtype)
    assert pipe.transformer.dtype == expected
    assert pipe.vae.dtype == (torch.float32 if isinstance(dtype, dict) else expected)


@pytest.mark.parametrize("layout", ["official", "diffusers"])
def test_unknown_dtypes_are_refused(layout, diffusers_copy):
    folder = FIXTURE_DIR if layout == "official" else diffusers_copy
    with pytest.raises(ValueError, match=r"`dtype` must be a torch.dtype or one of \['float32', 'fp32'"):
        ColaDLMPipeline.from_pretrained(folder, dtype="bf8")
    with pytest.raises(ValueError, match="Pass either `dtype` or `torch_dtype`"):
        ColaDLMPipeline.from_pretrained(folder, dtype="bf16", torch_dtype=torch.float16)


def test_saved_tokenizers_record_the_release_context(diffusers_copy):
    saved = json.loads((diffusers_copy / "tokenizer" / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == 4096
    assert ColaDLMPipeline.from_pretrained(diffusers_copy).max_sequence_length == 4096


@pytest.mark.parametrize("name", ["./nope", "nope", "/tmp/does/not/exist"])
def test_a_missing_folder_is_named(name):
    with pytest.raises(FileNotFoundError, match=f"The folder {name} does not exist"):
        ColaDLMPipeline.from_pretrained(name)
