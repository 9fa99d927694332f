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

from diffusers.modular_pipelines import ModularPipeline

from ...generation.inputs import resolve_sampling_defaults


class ColaDLMModularPipeline(ModularPipeline):
    """
    A ModularPipeline for text generation with Cola-DLM, created by [`ColaDLMBlocks.init_pipeline`].
    """

    @property
    def default_block_length(self) -> int:
        """Latents per generated block by default: the transformer's `block_size`."""
        return self.transformer.config.block_size

    def sampling_defaults(
        self, num_inference_steps: int | None = None, guidance_scale: float | None = None
    ) -> tuple[int, float]:
        """
        The steps per block and guidance scale of a call: those given, else the pipeline config's
        `default_num_inference_steps` and `default_guidance_scale` (read from `model_index.json`), else 16 and 7.0.
        """
        return resolve_sampling_defaults(
            num_inference_steps,
            guidance_scale,
            self.config.get("default_num_inference_steps"),
            self.config.get("default_guidance_scale"),
        )

    @property
    def pad_token_id(self) -> int | None:
        """The tokenizer's pad token (`<|pad|>` in the release)."""
        return self.tokenizer.pad_token_id

    @classmethod
    def _load_pipeline_config(cls, pretrained_model_name_or_path, **load_config_kwargs):
        modular_config_dict, config_dict = super()._load_pipeline_config(
            pretrained_model_name_or_path, **load_config_kwargs
        )
        if config_dict is not None:
            # A `model_index.json` lists an unset optional component (the guider) as `[null, null]`: keep it unset.
            config_dict = {name: value for name, value in config_dict.items() if value != [None, None]}
        return modular_config_dict, config_dict
