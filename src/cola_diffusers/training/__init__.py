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

"""
Training of Cola-DLM on accelerate: Stage 1 (Text VAE), Stage 2 (flow-matching prior, optionally joint with the
VAE), distillation to a few-step student, SFT and the VAE's special-token fine-tune.
"""

from ..lazy import lazy_exports
from .config import TrainingConfig


# Imported on first use, so that reading and checking a `TrainingConfig` needs no torch.
_EXPORTS = {
    "SFTBatch": ".sft",
    "build_sft_batch": ".sft",
    "prior_loss": ".losses",
    "render_conversation": ".sft",
    "sample_logit_normal": ".losses",
    "sft_loss": ".sft",
    "train": ".trainer",
    "two_block_layout_mask": ".losses",
    "vae_loss": ".losses",
}
__all__ = ["TrainingConfig", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
