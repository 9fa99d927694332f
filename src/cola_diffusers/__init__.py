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

"""Cola-DLM, the continuous latent diffusion language model, as a diffusers plugin."""

from .lazy import lazy_exports


__version__ = "0.1.0"

# Public names and the modules that define them; imported on first use, so that `cola-diffusers --help` and the
# light modules (chat formats, task templates, the demo task) start without torch.
_EXPORTS = {
    "AutoencoderKLColaText": ".models.autoencoders.autoencoder_kl_cola_text",
    "ColaDLMBlocks": ".modular_pipelines",
    "ColaDLMModularPipeline": ".modular_pipelines",
    "ColaDLMPipeline": ".pipelines.cola_dlm.pipeline_cola_dlm",
    "ColaDLMPipelineOutput": ".pipelines.cola_dlm.pipeline_output",
    "ColaDLMIteratorStreamer": ".pipelines.cola_dlm.streaming",
    "ColaDLMStreamChunk": ".pipelines.cola_dlm.pipeline_output",
    "ColaDLMStreamer": ".pipelines.cola_dlm.streaming",
    "ColaKVCache": ".models.attention_cola",
    "ColaTransformer1DModel": ".models.transformers.transformer_cola",
    "FlowMatchBlockCausalScheduler": ".schedulers.scheduling_flow_match_block_causal",
    "block_causal_mask": ".models.attention_cola",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
