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

import pytest
import torch

from cola_diffusers import FlowMatchBlockCausalScheduler


def test_default_schedule_is_the_official_linspace():
    scheduler = FlowMatchBlockCausalScheduler()
    scheduler.set_timesteps(8)
    assert torch.equal(scheduler.timesteps, torch.linspace(1000, 0, 9)[:-1])
    assert torch.equal(scheduler.sigmas, torch.linspace(1000, 0, 9) / 1000)


def test_euler_steps_integrate_to_the_data_for_exact_velocity():
    scheduler = FlowMatchBlockCausalScheduler()
    scheduler.set_timesteps(5)
    data, noise = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    sample = noise
    for t in scheduler.timesteps:
        sample = scheduler.step(noise - data, t, sample).prev_sample
    torch.testing.assert_close(sample, data)


def test_step_matches_the_official_update():
    scheduler = FlowMatchBlockCausalScheduler()
    scheduler.set_timesteps(4)
    sample, velocity = torch.randn(1, 4, 2), torch.randn(1, 4, 2)
    expected = sample - (1000.0 - 750.0) / 1000 * velocity
    assert torch.equal(scheduler.step(velocity, scheduler.timesteps[0], sample).prev_sample, expected)


def test_shift_spends_more_steps_at_high_noise():
    scheduler = FlowMatchBlockCausalScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    sigma = torch.linspace(1, 0, 5)
    torch.testing.assert_close(scheduler.sigmas, 3 * sigma / (1 + 2 * sigma))
    assert scheduler.timesteps[1] > 750


def test_custom_sigmas_and_timesteps():
    scheduler = FlowMatchBlockCausalScheduler()
    scheduler.set_timesteps(sigmas=[1.0, 0.5, 0.1])
    assert scheduler.timesteps.tolist() == pytest.approx([1000.0, 500.0, 100.0])
    scheduler.set_timesteps(timesteps=[900, 300])
    assert scheduler.sigmas.tolist() == pytest.approx([0.9, 0.3, 0.0])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_inference_steps": 0}, "`num_inference_steps` must be an integer >= 1"),
        ({"sigmas": [0.5, 0.7]}, "`sigmas` must be strictly decreasing"),
        ({"sigmas": [1.5]}, r"`sigmas` must be non-empty and lie in \(0, 1\]"),
        ({"num_inference_steps": 4, "sigmas": [1.0]}, "Pass exactly one of"),
    ],
)
def test_bad_schedules_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowMatchBlockCausalScheduler().set_timesteps(**kwargs)


def test_stepping_past_the_schedule_raises():
    scheduler = FlowMatchBlockCausalScheduler()
    scheduler.set_timesteps(1)
    sample = torch.zeros(1, 1, 1)
    scheduler.step(sample, scheduler.timesteps[0], sample)
    with pytest.raises(ValueError, match="All 1 steps of this block were taken"):
        scheduler.step(sample, scheduler.timesteps[0], sample)


def test_config_round_trip(tmp_path, caplog):
    FlowMatchBlockCausalScheduler(shift=2.0).save_pretrained(tmp_path)
    assert FlowMatchBlockCausalScheduler.from_pretrained(tmp_path).config.shift == 2.0
    # The parent's settings in the saved config load as a compatible scheduler's, without a warning.
    assert "not expected" not in caplog.text
