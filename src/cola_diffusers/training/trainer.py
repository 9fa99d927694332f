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

"""The training loop of every Cola-DLM stage, on accelerate."""

import dataclasses
import json
import logging
import os
from collections.abc import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..loaders.checks import check_model_config
from ..loaders.files import reported_write_errors
from ..loaders.tokenizer import load_tokenizer
from ..models.autoencoders.autoencoder_kl_cola_text import AutoencoderKLColaText
from ..models.transformers.transformer_cola import ColaTransformer1DModel
from ..pipelines.cola_dlm.pipeline_cola_dlm import ColaDLMPipeline
from ..schedulers.scheduling_flow_match_block_causal import FlowMatchBlockCausalScheduler
from .checkpoints import resume_state, save_checkpoint
from .config import STAGES, TrainingConfig
from .dataloaders import make_dataloader, sft_stop_token_id
from .objective import StageObjective, student_sigmas
from .optim import MuonAdamW


logger = logging.getLogger(__name__)
# The run's name in the trackers: tensorboard writes `output_dir/logs/cola-diffusers`.
TRACKER_PROJECT = "cola-diffusers"


def build_pipeline(config: TrainingConfig) -> ColaDLMPipeline:
    """The pipeline to train: loaded from `pretrained_model` or built from the configs."""
    if config.pretrained_model is not None:
        return ColaDLMPipeline.from_pretrained(config.pretrained_model)
    # A new tokenizer records the training length as its context; a pretrained one keeps what it records.
    check_model_config(ColaTransformer1DModel, config.transformer_config, "`transformer_config`")
    check_model_config(AutoencoderKLColaText, config.vae_config, "`vae_config`")
    tokenizer = load_tokenizer(config.tokenizer_file, model_max_length=config.max_length)
    vae = AutoencoderKLColaText(**{"vocab_size": len(tokenizer), **config.vae_config})
    transformer = ColaTransformer1DModel(**{"in_channels": vae.config.latent_dim, **config.transformer_config})
    return ColaDLMPipeline(transformer, vae, FlowMatchBlockCausalScheduler(), tokenizer)


def train(config: TrainingConfig) -> tuple[ColaDLMPipeline, list[float]]:
    """
    Trains the configured stage, saving checkpoints and the final pipeline (diffusers format) to `output_dir`.

    Returns:
        The trained pipeline and the loss of every optimiser step, those of a resumed checkpoint included.
    """
    config.check_files()
    with reported_write_errors(config.output_dir):
        os.makedirs(config.output_dir, exist_ok=True)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=config.report_to,
        project_config=ProjectConfiguration(config.output_dir, logging_dir=os.path.join(config.output_dir, "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(config.seed)
    warn_if_prior_on_new_vae(config, accelerator)
    pipe = build_pipeline(config)
    run = prepare_training(accelerator, config, pipe)
    step, history = resume_state(accelerator, config)
    if config.report_to is not None:
        accelerator.init_trackers(TRACKER_PROJECT, config=tracked_settings(config))
    history = run.run_steps(step, history)
    save_trained(run, pipe, history)
    accelerator.end_training()
    return pipe, history


def warn_if_prior_on_new_vae(config: TrainingConfig, accelerator: Accelerator):
    """Warns (once) when Stage 2 would train on the latents of a newly initialised VAE."""
    if config.stage == "prior" and config.pretrained_model is None and accelerator.is_main_process:
        # The VAE is new and stays frozen in Stage 2 (a resumed checkpoint holds that same untrained VAE).
        logger.warning(
            "Stage 2 trains the prior on the latents of an untrained VAE: `pretrained_model` is null, so the VAE is "
            "newly initialised. Set `pretrained_model` to the Stage-1 `output_dir`."
        )


@dataclasses.dataclass(kw_only=True)
class PreparedTraining:
    """
    A run's objective, optimiser, data and EMA, prepared by accelerate; `trained` is the unwrapped trained model.
    """

    accelerator: Accelerator
    config: TrainingConfig
    objective: torch.nn.Module
    trained: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    dataloader: DataLoader
    validation: DataLoader | None
    ema: EMAModel | None

    def run_steps(self, step: int, history: list[float]) -> list[float]:
        """
        Optimiser steps from `step` to `max_steps`; returns `history` (the losses of the steps before) followed by
        each new step's loss, averaged over the processes.
        """
        config, accelerator = self.config, self.accelerator
        history = list(history)
        # Closed before an error's message is printed.
        with tqdm(
            total=config.max_steps,
            initial=step,
            desc=STAGES[config.stage],
            disable=not accelerator.is_local_main_process,
        ) as progress_bar:
            for batch in self.batches(step) if step < config.max_steps else ():
                loss = self.accumulate_batch(batch, step)
                if not accelerator.sync_gradients:
                    continue
                step += 1
                history.append(self.finish_step(loss))
                accelerator.log({"loss": history[-1], "lr": self.lr_scheduler.get_last_lr()[0]}, step=step)
                progress_bar.update()
                if step % config.log_every == 0:
                    progress_bar.set_postfix(loss=f"{history[-1]:.4f}")
                if self.validation is not None and step % config.validation_every == 0:
                    validation_loss = self.validation_loss()
                    accelerator.log({"validation_loss": validation_loss}, step=step)
                    progress_bar.write(f"step {step}: validation loss {validation_loss:.4f}")
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    save_checkpoint(accelerator, config, step, history)
                if step >= config.max_steps:
                    break
        return history

    def batches(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        """
        The batches from optimiser step `step` on, without end: epoch after epoch of the rows (skipping those done),
        or the packed stream from its row `step × batch_size × gradient_accumulation_steps` on.
        """
        config, accelerator = self.config, self.accelerator
        if isinstance(self.dataloader.dataset, torch.utils.data.IterableDataset):  # packed rows
            self.dataloader.dataset.start_row = step * config.batch_size * config.gradient_accumulation_steps
            for batch in self.dataloader:
                yield {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
            return
        epoch_steps = self.steps_per_epoch()
        while True:
            epoch, skip = divmod(step, epoch_steps)
            self.dataloader.set_epoch(epoch)
            yield from accelerator.skip_first_batches(self.dataloader, skip * config.gradient_accumulation_steps)
            step = (epoch + 1) * epoch_steps

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one pass over the data; refuses data too small for one."""
        config = self.config
        steps = len(self.dataloader) // config.gradient_accumulation_steps
        if steps == 0:
            raise ValueError(
                f"`train_file` `{config.train_file}` has too few lines for one optimiser step: "
                f"{self.accelerator.num_processes} process(es) × `batch_size` {config.batch_size} × "
                f"`gradient_accumulation_steps` {config.gradient_accumulation_steps} rows are needed."
            )
        return steps

    def accumulate_batch(self, batch: dict, step: int) -> torch.Tensor:
        """Loss, backward pass and (once the gradients are accumulated) optimiser step of one batch."""
        with self.accelerator.accumulate(self.objective):
            loss = self.objective(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"The loss became {loss.item()} at step {step}.")
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients and self.config.max_grad_norm is not None:
                self.accelerator.clip_grad_norm_(self.trained.parameters(), self.config.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
        return loss

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The mean loss of the first `validation_batches` validation batches, with the same noise every time."""
        config, accelerator = self.config, self.accelerator
        losses = []
        # Fixed noise that leaves the training's random state as it was.
        devices = [accelerator.device] if accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            self.validation.generator.manual_seed(config.seed)  # the same rows in the same order
            for index, batch in enumerate(self.validation):
                if index == config.validation_batches:
                    break
                batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
                losses.append(self.objective(batch))
        return accelerator.gather(torch.stack(losses).mean()[None]).mean().item()

    def finish_step(self, loss: torch.Tensor) -> float:
        """Updates the EMA after an optimiser step; returns the step's loss averaged over the processes."""
        if self.ema is not None:
            self.ema.step(self.trained.parameters())
        return self.accelerator.gather(loss.detach()).mean().item()


def prepare_training(accelerator: Accelerator, config: TrainingConfig, pipe: ColaDLMPipeline) -> PreparedTraining:
    """Freezes all but the trained model, builds its optimiser, data and EMA, and prepares them with accelerate."""
    dataloader = make_dataloader(accelerator, pipe, config)
    objective = StageObjective(config, pipe.transformer, pipe.vae, student_sigmas(pipe, config))
    trained = objective.trained
    objective.requires_grad_(False).eval()
    trained.requires_grad_(True).train()
    if config.gradient_checkpointing:
        trained.enable_gradient_checkpointing()
    ema = EMAModel(trained.parameters(), decay=config.ema_decay) if config.ema_decay else None
    optimizer = make_optimizer(config, trained)
    # Per process, as diffusers' training examples count: the prepared scheduler steps once per process.
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_steps * accelerator.num_processes,
    )
    objective, optimizer, lr_scheduler = accelerator.prepare(objective, optimizer, lr_scheduler)
    if not config.packing:
        # A packed stream is already this process's shard.
        dataloader = accelerator.prepare(dataloader)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    validation = None
    if config.validation_file is not None:
        validation = make_dataloader(accelerator, pipe, dataclasses.replace(config, train_file=config.validation_file))
    return PreparedTraining(
        accelerator=accelerator,
        validation=validation,
        config=config,
        objective=objective,
        trained=trained,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        dataloader=dataloader,
        ema=ema,
    )


def make_optimizer(config: TrainingConfig, trained: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW with the configured betas and ε, SGD, or the official Muon with AdamW, over the trained model."""
    if config.optimizer == "muon":
        return MuonAdamW.for_model(
            trained,
            lr=config.learning_rate,
            scalar_lr=config.scalar_learning_rate or config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(trained.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(
        trained.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )


def tracked_settings(config: TrainingConfig) -> dict:
    """The run's settings as trackers accept them: numbers, strings and booleans, the rest as JSON."""
    return {
        key: value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
        for key, value in dataclasses.asdict(config).items()
    }


def save_trained(run: PreparedTraining, pipe: ColaDLMPipeline, history: list[float]):
    """Copies the EMA weights in and saves the pipeline and the loss history to `output_dir` (main process)."""
    config, accelerator = run.config, run.accelerator
    accelerator.wait_for_everyone()
    if run.ema is not None:
        run.ema.copy_to(run.trained.parameters())
    run.trained.eval()
    if config.stage == "sft":
        # `messages=`, the command line and the server render conversations as the model was trained.
        pipe.register_to_config(
            chat_format=config.chat_format,
            chat_stop_token_id=sft_stop_token_id(pipe, config),
            chat_pad_with_stop=config.pad_with_stop if config.chat_format == "chatml" else True,
        )
    if config.stage == "distill":
        # The student samples with its own steps and no guidance when a call leaves them unset.
        pipe.register_to_config(default_num_inference_steps=config.num_inference_steps, default_guidance_scale=1.0)
    if accelerator.is_main_process:
        with reported_write_errors(config.output_dir):
            pipe.save_pretrained(config.output_dir)
            with open(os.path.join(config.output_dir, "loss_history.json"), "w") as file:
                json.dump({"num_processes": accelerator.num_processes, "losses": history}, file)
        print(f"{STAGES[config.stage]}: saved to {config.output_dir}")
    accelerator.wait_for_everyone()
