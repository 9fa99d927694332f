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

from ...generation.request import CheckpointDefaults


class ColaDLMModularPipeline(ModularPipeline):
    """
    A ModularPipeline for text generation with Cola-DLM, created by [`ColaDLMBlocks.init_pipeline`].
    """

    @property
    def checkpoint_defaults(self) -> CheckpointDefaults:
        """
        What the checkpoint sets for requests that leave a setting unset: the transformer's `block_size` and the
        `default_num_inference_steps`, `default_guidance_scale` and chat settings of `model_index.json`.
        """
        return CheckpointDefaults.from_pipeline(self)

    @classmethod
    def _load_pipeline_config(cls, pretrained_model_name_or_path, **load_config_kwargs):
        modular_config_dict, config_dict = super()._load_pipeline_config(
            pretrained_model_name_or_path, **load_config_kwargs
        )
        if config_dict is not None:
            # A `model_index.json` lists an unset optional component (the guider) as `[null, null]`: keep it unset.
            config_dict = {name: value for name, value in config_dict.items() if value != [None, None]}
        return modular_config_dict, config_dict
