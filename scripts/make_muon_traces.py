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
Build `tests/fixtures/muon_traces.safetensors`: three steps of the official `MuonAdamW` (`cola_dlm/optim.py`, run
eagerly: `TORCHDYNAMO_DISABLE=1` turns its `torch.compile` off) on a tall and a wide stack of matrices and a vector,
with the official pretraining's group settings and a changing momentum, as `tests/training/test_optim.py` replays
them with ours.

    TORCHDYNAMO_DISABLE=1 python scripts/make_muon_traces.py \
        --official-optim ../shared/reference/cola-dlm-official/cola_dlm/optim.py
"""

import argparse
import importlib.util
import os

import torch
from safetensors.torch import save_file


OUTPUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "muon_traces.safetensors")
SHAPES = [(8, 4), (8, 4), (4, 8), (8,)]
# (momentum, weight decay) of each step: the official schedules change both between steps.
STEPS = [(0.85, 0.1), (0.9, 0.05), (0.97, 0.0)]
ADAMW = {"kind": "adamw", "lr": 0.3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.0}
MUON = {"kind": "muon", "lr": 0.02, "ns_steps": 5, "beta2": 0.9, "momentum": STEPS[0][0], "weight_decay": STEPS[0][1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-optim", required=True, help="The official cola_dlm/optim.py.")
    args = parser.parse_args()
    if os.environ.get("TORCHDYNAMO_DISABLE") != "1":
        parser.error("run with TORCHDYNAMO_DISABLE=1, so that the official optimiser runs eagerly on the CPU")
    spec = importlib.util.spec_from_file_location("official_optim", args.official_optim)
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)

    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]
    traces = {f"param.{index}.initial": param.detach().clone() for index, param in enumerate(params)}
    groups = [{"params": params[3:], **ADAMW}, {"params": params[:2], **MUON}, {"params": params[2:3], **MUON}]
    optimizer = official.MuonAdamW(groups)
    for step, (momentum, weight_decay) in enumerate(STEPS):
        for group in optimizer.param_groups[1:]:
            group.update(momentum=momentum, weight_decay=weight_decay)
        for index, param in enumerate(params):
            param.grad = torch.randn(param.shape, generator=generator)
            traces[f"grad.{step}.{index}"] = param.grad.clone()
        optimizer.step()
        traces.update({f"param.{index}.step{step}": param.detach().clone() for index, param in enumerate(params)})
    save_file(traces, OUTPUT)
    print(f"Wrote {os.path.normpath(OUTPUT)}")


if __name__ == "__main__":
    main()
