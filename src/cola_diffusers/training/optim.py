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
The official pretraining's optimiser (`cola_dlm/optim.py`, after nanochat): Muon on the matrices, AdamW on the rest.

`torch.optim.Muon` is another update (one Newton-Schulz coefficient triple, no second-moment scaling, decoupled
weight decay), so the official one is written out here, step for step; `tests/fixtures/muon_traces.safetensors`
holds the official optimiser's steps that `tests/training/test_optim.py` compares against.
"""

import torch


# The Polar Express orthogonalisation: one (a, b, c) per iteration.
POLAR_EXPRESS_COEFFICIENTS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """bf16 on GPUs that compute in it fast (compute capability 8.0 on), as the official optimiser; else the tensor's."""
    if tensor.is_cuda and torch.cuda.get_device_capability(tensor.device) >= (8, 0):
        return torch.bfloat16
    return tensor.dtype


def polar_express(update: torch.Tensor, ns_steps: int) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to each of a stack of matrices, by `ns_steps` Polar Express iterations."""
    x = update.to(compute_dtype(update))
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-6)
    tall = update.size(-2) > update.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFICIENTS[:ns_steps]:
        gram = x.mT @ x if tall else x @ x.mT
        polynomial = b * gram + c * (gram @ gram)
        x = a * x + (x @ polynomial if tall else polynomial @ x)
    return x


def normuon_scale(update: torch.Tensor, second_moment: torch.Tensor, beta2: float, dim: int) -> torch.Tensor:
    """
    NorMuon: `update` scaled per row (or column, `dim`) by the inverse root of an EMA of its mean square, then back
    to its own norm; updates `second_moment` in place.
    """
    mean_square = update.float().square().mean(dim=dim, keepdim=True)
    size = update.size(dim)
    norm = (mean_square.sum(dim=(-2, -1), keepdim=True) * size).sqrt()
    second_moment.lerp_(mean_square.to(second_moment.dtype), 1 - beta2)
    step_size = second_moment.clamp_min(1e-10).rsqrt()
    scaled_norm = ((mean_square * size) * step_size.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    return update * (step_size * (norm / scaled_norm.clamp_min(1e-10))).to(update.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """
    Muon for the groups of `kind` `"muon"` (stacks of equally shaped matrices: `lr`, `momentum`, `ns_steps`,
    `beta2`, `weight_decay`), AdamW for those of `kind` `"adamw"` (`lr`, `betas`, `eps`, `weight_decay`), as the
    official `MuonAdamW`. Muon takes Nesterov momentum, orthogonalises it (Polar Express), rescales it (NorMuon), and
    decays only the weights that the update moves towards zero (cautious weight decay), with the learning rate
    scaled by `max(1, rows / columns) ** 0.5`.
    """

    def __init__(self, param_groups: list[dict]):
        super().__init__(param_groups, defaults={})

    @classmethod
    def for_model(
        cls,
        model: torch.nn.Module,
        *,
        lr: float,
        scalar_lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
    ) -> "MuonAdamW":
        """
        The official pretraining's groups: a Muon group per matrix shape (`lr`, momentum 0.95, 5 iterations, β₂ 0.9,
        `weight_decay`), AdamW on the other trainable parameters (`scalar_lr`, `betas`, `eps`, no weight decay).
        """
        matrices, others = {}, []
        for param in model.parameters():
            if param.requires_grad:
                (matrices.setdefault(param.shape, []) if param.ndim == 2 else others).append(param)
        adamw = {"kind": "adamw", "lr": scalar_lr, "betas": betas, "eps": eps, "weight_decay": 0.0}
        muon = {"kind": "muon", "lr": lr, "momentum": 0.95, "ns_steps": 5, "beta2": 0.9, "weight_decay": weight_decay}
        groups = [{"params": others, **adamw}] if others else []
        return cls(groups + [{"params": params, **muon} for params in matrices.values()])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self.adamw_step(group)
            elif group["kind"] == "muon":
                self.muon_step(group)
            else:
                raise ValueError(f'A parameter group\'s `kind` is "adamw" or "muon", got {group["kind"]!r}.')
        return loss

    def adamw_step(self, group: dict):
        beta1, beta2 = group["betas"]
        for param in group["params"]:
            if param.grad is None:
                continue
            state = self.state[param]
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
            state["step"] += 1
            param.mul_(1 - group["lr"] * group["weight_decay"])
            state["exp_avg"].lerp_(param.grad, 1 - beta1)
            state["exp_avg_sq"].lerp_(param.grad.square(), 1 - beta2)
            denominator = (state["exp_avg_sq"] / (1 - beta2 ** state["step"])).sqrt() + group["eps"]
            param.add_(state["exp_avg"] / denominator, alpha=-group["lr"] / (1 - beta1 ** state["step"]))

    def muon_step(self, group: dict):
        params = group["params"]
        if not params:
            return
        rows, columns = params[0].shape
        state = self.state[params[0]]  # the group's stacked buffers live with its first matrix
        if not state:
            moment_shape = (len(params), rows, 1) if rows >= columns else (len(params), 1, columns)
            state["momentum_buffer"] = torch.zeros(
                len(params), rows, columns, dtype=params[0].dtype, device=params[0].device
            )
            state["second_momentum_buffer"] = params[0].new_zeros(moment_shape)
        stacked = torch.stack(list(params))
        gradients = torch.stack([param.grad for param in params])
        momentum = group["momentum"]
        state["momentum_buffer"].lerp_(gradients, 1 - momentum)
        update = polar_express(gradients.lerp_(state["momentum_buffer"], momentum), group["ns_steps"])
        update = normuon_scale(update, state["second_momentum_buffer"], group["beta2"], -1 if rows >= columns else -2)
        lr = torch.tensor(group["lr"] * max(1.0, rows / columns) ** 0.5, dtype=update.dtype)
        weight_decay = torch.tensor(group["weight_decay"], dtype=update.dtype)
        cautious = (update * stacked) >= 0
        stacked.sub_(lr * update + lr * weight_decay * stacked * cautious)
        torch._foreach_copy_(list(params), list(stacked.unbind(0)))
