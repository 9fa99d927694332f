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

"""The official pretraining's Muon with AdamW: the official optimiser's steps, and a run that trains and resumes."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from cola_diffusers.training import train
from cola_diffusers.training.optim import MuonAdamW

from ..conftest import FIXTURES
from .test_training import corpus_file, tiny_config  # noqa: F401


# Made by scripts/make_muon_traces.py from the official cola_dlm/optim.py.
TRACES = load_file(FIXTURES / "muon_traces.safetensors")
STEPS = [(0.85, 0.1), (0.9, 0.05), (0.97, 0.0)]


def test_muon_adamw_takes_the_official_steps():
    params = [torch.nn.Parameter(TRACES[f"param.{index}.initial"].clone()) for index in range(4)]
    adamw = {"kind": "adamw", "lr": 0.3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.0}
    muon = {"kind": "muon", "lr": 0.02, "ns_steps": 5, "beta2": 0.9, "momentum": 0.0, "weight_decay": 0.0}
    optimizer = MuonAdamW(
        [{"params": params[3:], **adamw}, {"params": params[:2], **muon}, {"params": params[2:3], **muon}]
    )
    for step, (momentum, weight_decay) in enumerate(STEPS):
        for group in optimizer.param_groups[1:]:
            group.update(momentum=momentum, weight_decay=weight_decay)
        for index, param in enumerate(params):
            param.grad = TRACES[f"grad.{step}.{index}"].clone()
        optimizer.step()
        for index, param in enumerate(params):
            torch.testing.assert_close(param.detach(), TRACES[f"param.{index}.step{step}"], rtol=1e-5, atol=1e-6)


def test_torch_muon_is_another_update():
    # Why the official update is written out: torch's Muon, given the same first step, lands elsewhere.
    param = torch.nn.Parameter(TRACES["param.0.initial"].clone())
    param.grad = TRACES["grad.0.0"].clone()
    torch.optim.Muon([param], lr=0.02, momentum=0.85, weight_decay=0.1, adjust_lr_fn="original").step()
    assert not torch.allclose(param.detach(), TRACES["param.0.step0"], rtol=1e-3, atol=1e-4)


def test_muon_trains_and_resumes_like_an_uninterrupted_run(corpus_file, tmp_path):  # noqa: F811
    settings = {"optimizer": "muon", "learning_rate": 0.02, "scalar_learning_rate": 3e-3, "weight_decay": 0.1}
    config = tiny_config("prior", corpus_file, tmp_path / "straight", max_steps=6, **settings)
    pipe, straight = train(config)
    optimizer_kinds = {
        group["kind"]
        for group in MuonAdamW.for_model(
            pipe.transformer, lr=1, scalar_lr=1, betas=(0.9, 0.9), eps=1e-8, weight_decay=0
        ).param_groups
    }
    assert optimizer_kinds == {"muon", "adamw"}
    first = dataclasses.replace(config, output_dir=str(tmp_path / "run"), checkpoint_every=3, max_steps=3)
    train(first)
    _, resumed = train(dataclasses.replace(first, max_steps=6, resume_from="latest"))
    assert resumed == pytest.approx(straight, rel=1e-5)
    assert straight[-1] < straight[0]
