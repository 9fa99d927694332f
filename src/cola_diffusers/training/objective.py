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

"""The loss of each training stage as one module, the trained models inside it."""

import copy
import functools

import torch

from ..models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ..models.transformers.transformer_cola import ColaTransformer1DModel
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from .config import TrainingConfig
from .losses import distillation_loss, joint_prior_loss, prior_loss, vae_finetune_loss, vae_loss
from .sft import sft_loss


class StageObjective(torch.nn.Module):
    """
    The loss of one stage as a module, so that distributed wrappers (DDP, FSDP) see the trained model's forward.

    Holds the trained model and the frozen one; `forward(batch)` returns the loss. Distillation trains at the noise
    levels `sigmas` of the student's steps.
    """

    def __init__(
        self,
        config: TrainingConfig,
        transformer: ColaTransformer1DModel,
        vae: AutoencoderKLColaText,
        sigmas: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        self.transformer = transformer
        self.vae = vae
        self.register_buffer("sigmas", sigmas, persistent=False)
        # Joint Stage 2: the VAE as it starts, frozen, the reference its latents may not drift from.
        self.reference_vae = copy.deepcopy(vae).requires_grad_(False) if config.joint_vae else None

    @property
    def trained(self) -> torch.nn.Module:
        """The module whose weights the stage trains; the fine-tune trains the decoder's output layer only."""
        if self.config.stage == "vae_finetune":
            return self.vae.decoder.lm_head
        if self.config.joint_vae:
            return self.joint
        return self.vae if self.config.stage == "vae" else self.transformer

    @functools.cached_property
    def joint(self) -> torch.nn.ModuleList:
        """Joint Stage 2: the two trained models."""
        return torch.nn.ModuleList([self.transformer, self.vae])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        config = self.config
        if config.stage == "distill":
            return distillation_loss(
                self.transformer,
                batch["latents"],
                batch["noise"],
                batch["generated"],
                batch["valid"],
                self.transformer.config.block_size,
                sigmas=self.sigmas,
            )
        if config.stage == "sft":
            return sft_loss(
                self.transformer,
                self.vae,
                batch["input_ids"],
                batch["response"],
                batch["loss_mask"],
                self.block_sizes(len(batch["input_ids"])),
                logit_mean=config.logit_mean,
                logit_std=config.logit_std,
                sample_posterior=config.sample_posterior,
                boundary_mode=config.boundary_mode,
                loss_mode=config.loss_mode,
            )
        if config.stage == "vae_finetune":
            return vae_finetune_loss(self.vae, batch["input_ids"], batch["attention_mask"])
        if config.stage == "vae":
            losses = vae_loss(
                self.vae,
                batch["input_ids"],
                batch["attention_mask"],
                kl_weight=config.kl_weight,
                mask_rate=config.mask_rate,
                masked_token_weight=config.masked_token_weight,
                sample_posterior=config.sample_posterior,
            )
            return losses["loss"]
        prior_options = {
            "prompt_boundary_rate": config.prompt_boundary_rate,
            "logit_mean": config.logit_mean,
            "logit_std": config.logit_std,
            "noise_level_per": config.noise_level_per,
            "sample_posterior": config.sample_posterior,
        }
        inputs = (batch["input_ids"], batch["attention_mask"], self.block_sizes(len(batch["input_ids"])))
        if not config.joint_vae:
            return prior_loss(self.transformer, self.vae, *inputs, **prior_options)
        return joint_prior_loss(
            self.transformer,
            self.vae,
            self.reference_vae,
            *inputs,
            vae_weight=config.joint_vae_weight,
            entropy_weight=config.joint_entropy_weight,
            reference_weight=config.joint_reference_weight,
            mask_rate=config.mask_rate,
            masked_token_weight=config.masked_token_weight,
            **prior_options,
        )["loss"]

    def block_sizes(self, batch_size: int) -> torch.LongTensor:
        """Every sample's block size, drawn from `block_sizes` with `block_size_probs`."""
        config = self.config
        probs = torch.tensor(config.block_size_probs or [1.0] * len(config.block_sizes))
        choice = torch.multinomial(probs, batch_size, replacement=True)
        return torch.tensor(config.block_sizes)[choice].to(self.transformer.device)


def student_sigmas(pipe: ColaDLMPipeline, config: TrainingConfig) -> torch.Tensor | None:
    """Distillation: the noise levels of the student's `num_inference_steps` steps under the pipeline's scheduler."""
    if config.stage != "distill":
        return None
    pipe.scheduler.set_timesteps(config.num_inference_steps)
    return pipe.scheduler.timesteps.float() / pipe.scheduler.config.num_train_timesteps
