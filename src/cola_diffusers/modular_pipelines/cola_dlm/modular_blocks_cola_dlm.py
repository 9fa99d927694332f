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

import os
from copy import deepcopy

from diffusers.modular_pipelines import ComponentsManager, SequentialPipelineBlocks
from diffusers.modular_pipelines.modular_pipeline_utils import OutputParam

from .before_denoise import ColaDLMPrepareStep
from .decoders import ColaDLMOutputStep
from .denoise import ColaDLMDenoiseStep
from .encoders import ColaDLMTextEncoderStep
from .inputs import ColaDLMInputStep
from .modular_pipeline import ColaDLMModularPipeline


class ColaDLMBlocks(SequentialPipelineBlocks):
    """
    Modular pipeline blocks for text generation with Cola-DLM: input -> text_encoder -> prepare -> denoise (per
    block: denoiser -> after_denoiser at every step, then decoder -> commit) -> output. Gives the same results as
    [`ColaDLMPipeline`].

    Example:
        ```python
        >>> from cola_diffusers import ColaDLMBlocks

        >>> pipe = ColaDLMBlocks().init_pipeline("path/to/diffusers-format/cola-dlm")
        >>> pipe.load_components()
        >>> pipe(prompt="The capital of France is", gen_length=32, output="texts")
        ```
    """

    model_name = "cola-dlm"
    block_classes = [
        ColaDLMInputStep,
        ColaDLMTextEncoderStep,
        ColaDLMPrepareStep,
        ColaDLMDenoiseStep,
        ColaDLMOutputStep,
    ]
    block_names = ["input", "text_encoder", "prepare", "denoise", "output"]

    @property
    def description(self) -> str:
        return "Modular pipeline blocks for text generation with Cola-DLM."

    @property
    def outputs(self) -> list[OutputParam]:
        return ColaDLMOutputStep().intermediate_outputs

    def init_pipeline(
        self,
        pretrained_model_name_or_path: str | os.PathLike | None = None,
        components_manager: ComponentsManager | None = None,
        collection: str | None = None,
    ) -> ColaDLMModularPipeline:
        """
        Creates a [`ColaDLMModularPipeline`] of these blocks; with `pretrained_model_name_or_path`, a folder or Hub
        repo in the diffusers format, whose components `load_components()` then loads.
        """
        return ColaDLMModularPipeline(
            blocks=deepcopy(self),
            pretrained_model_name_or_path=pretrained_model_name_or_path,
            components_manager=components_manager,
            collection=collection,
        )
