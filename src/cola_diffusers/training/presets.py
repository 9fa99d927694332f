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
The official scripts' recipes, as `TrainingConfig` settings (its `preset`); docs/training.md lists their sources and
where they differ.
"""

PRESETS = {
    "official-pretrain": {
        "learning_rate": 1.5e-4,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 5000,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "max_length": 512,
        "block_sizes": [16],
        "prompt_boundary_rate": 0.05,
        "logit_mean": 1.0,
        "logit_std": 1.0,
        "noise_level_per": "sample",
        "sample_posterior": True,
        "mixed_precision": "bf16",
    },
    "official-cpt": {
        "learning_rate": 1.5e-4,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 5000,
        "adam_beta1": 0.9,
        "adam_beta2": 0.95,
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "max_length": 512,
        "block_sizes": [16],
        "prompt_boundary_rate": 0.05,
        "logit_mean": 0.0,
        "logit_std": 1.0,
        "noise_level_per": "sample",
        "sample_posterior": True,
        "mixed_precision": "bf16",
    },
    "official-sft": {
        "stage": "sft",
        "learning_rate": 1e-4,
        "lr_scheduler": "constant_with_warmup",
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "max_length": 512,
        "block_sizes": [1, 2, 4, 8, 16],
        "block_size_probs": [0.1, 0.0, 0.3, 0.3, 0.3],
        "logit_mean": 0.0,
        "logit_std": 1.0,
        "sample_posterior": True,
        "chat_format": "text",
        "mixed_precision": "bf16",
    },
}
