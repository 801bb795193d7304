"""Seam planning and the seam modes as Guidance: tail padding, weights, RTC pulls toward the
prefix, hard inpainting lands on it, and the harness shows RTC joining chunks."""

import numpy as np
import pytest
import torch

from halo_ros.model.guidance import x0_estimate
from halo_ros.model.inference import flow_schedule
from halo_ros.runtime.guidance import (
    HardInpaintGuidance,
    RtcGuidance,
    flow_conditioning,
    guidance_weight,
)
from halo_ros.runtime.seam import SeamMode, WeightSchedule, pad_tail, plan_seam, prefix_weights
from halo_ros.runtime.smooth_flow import GaussianChunkFlow

H, A = 20, 3


def test_tail_padding_repeats_the_last_action_never_zeros():
    tail = np.arange(12, dtype=np.float32).reshape(4, 3) + 1.0
    padded = pad_tail(tail, 7)
    assert padded.shape == (7, 3)
    np.testing.assert_array_equal(padded[:4], tail)
    np.testing.assert_array_equal(padded[4:], np.repeat(tail[-1:], 3, axis=0))
    np.testing.assert_array_equal(pad_tail(tail, 2), tail[:2])
    with pytest.raises(ValueError, match='non-empty'):
        pad_tail(np.zeros((0, 3), np.float32), 5)


@pytest.mark.parametrize('schedule', list(WeightSchedule))
def test_prefix_weights_freeze_the_delay_then_decay_to_zero(schedule):
    w = prefix_weights(3, 12, H, schedule)
    assert w.shape == (H,)
    np.testing.assert_array_equal(w[:3], 1.0)
    assert np.all(np.diff(w[3:12]) < 0) and 0 < w[11] < w[3] < 1
    np.testing.assert_array_equal(w[12:], 0.0)


def test_plan_seam_modes():
    tail = np.ones((8, A), np.float32)
    assert plan_seam(SeamMode.NONE, tail, H, 2, 4) is None
    assert plan_seam(SeamMode.RTC, np.zeros((0, A), np.float32), H, 2, 4) is None
    hard = plan_seam(SeamMode.HARD, tail, H, 2, 4)
    np.testing.assert_array_equal(hard.weights, (np.arange(H) < 2).astype(np.float32))
    rtc = plan_seam(SeamMode.RTC, tail, H, 2, 4)
    assert rtc.valid_steps == 8 and rtc.delay_steps == 2
    assert rtc.weights[7] > 0 and np.all(rtc.weights[8:] == 0)  # soft region ends with the tail
    # d larger than the known tail: frozen no further than the tail reaches
    assert plan_seam(SeamMode.RTC, tail[:1], H, 5, 5).delay_steps == 1


def test_guidance_weight_is_clipped():
    assert guidance_weight(1.0, 7.0) == 7.0  # tau = 0: diverges, clipped
    assert guidance_weight(0.5, 100.0) == pytest.approx(2.0)  # (0.25 + 0.25) / 0.25
    assert guidance_weight(0.5, 1.5) == 1.5


def _flow():
    return GaussianChunkFlow(H, np.full(A, 0.5), length_scale_steps=4.0)


def test_rtc_guidance_pulls_x0_hat_toward_the_prefix():
    flow = _flow()
    mean = torch.zeros(H, A)
    target = torch.full((H, A), 0.8)
    weights = torch.from_numpy(prefix_weights(5, 12, H))
    guidance = RtcGuidance(target, weights, max_weight=10.0)
    x_t = torch.randn(H, A, generator=torch.Generator().manual_seed(0))
    t = 0.4

    def velocity_fn(x):
        return flow.velocity(x, t, mean)

    v = velocity_fn(x_t)
    v_guided = guidance.velocity(x_t, t, 0, velocity_fn)
    step = 0.1  # one Euler step each way; compare the new clean estimates on the prefix
    x_plain, x_guided = x_t - step * v, x_t - step * v_guided
    t_next = t - step
    err_plain = (x0_estimate(x_plain, t_next, flow.velocity(x_plain, t_next, mean)) - target)[:5]
    err_guided = (x0_estimate(x_guided, t_next, flow.velocity(x_guided, t_next, mean)) - target)[:5]
    assert err_guided.abs().mean() < 0.9 * err_plain.abs().mean()
    assert not x_t.requires_grad and not v_guided.requires_grad


def _sample(flow, mean, noise, guidance, steps=9):
    ts = flow_schedule(steps)
    x = noise.clone()
    for i in range(steps):
        t = float(ts[i])

        def velocity_fn(x_in, t=t):
            return flow.velocity(x_in, t, mean)

        v = velocity_fn(x) if guidance is None else guidance.velocity(x, t, i, velocity_fn)
        x = x - v.detach() * float(ts[i] - ts[i + 1])
    return x


def test_guided_sampling_joins_the_prefix_and_hard_inpainting_lands_on_it():
    flow = _flow()
    mean = torch.zeros(H, A)
    noise = torch.randn(H, A, generator=torch.Generator().manual_seed(1))
    target = torch.from_numpy(pad_tail(np.full((10, A), 0.6, np.float32), H))
    plan_w = torch.from_numpy(prefix_weights(4, 10, H))
    free = _sample(flow, mean, noise, None)
    rtc = _sample(flow, mean, noise, RtcGuidance(target, plan_w, max_weight=10.0))
    hard = _sample(flow, mean, noise, HardInpaintGuidance(target, (torch.arange(H) < 4).float()))
    gap_free = (free[:5] - target[:5]).abs().mean()
    assert (rtc[:5] - target[:5]).abs().mean() < 0.3 * gap_free
    torch.testing.assert_close(hard[:4], target[:4], atol=1e-5, rtol=0)


def test_flow_conditioning_follows_the_plan():
    tail = np.arange(6 * A, dtype=np.float32).reshape(6, A)
    assert flow_conditioning(None) == (None, None)
    rtc, no_prefix = flow_conditioning(plan_seam(SeamMode.RTC, tail, H, 2, 3, max_guidance=4.0))
    assert isinstance(rtc, RtcGuidance) and rtc.max_weight == 4.0 and no_prefix is None
    hard, _ = flow_conditioning(plan_seam(SeamMode.HARD, tail, H, 2, 3))
    assert isinstance(hard, HardInpaintGuidance)
    guidance, prefix = flow_conditioning(plan_seam(SeamMode.PREFIX, tail, H, 4, 3))
    assert guidance is None
    np.testing.assert_array_equal(prefix.numpy(), tail[:4])
    assert flow_conditioning(plan_seam(SeamMode.PREFIX, tail, H, 0, 3)) == (None, None)
    assert plan_seam(SeamMode.NONE, tail, H, 2, 3) is None
    with pytest.raises(ValueError, match='disagree'):
        RtcGuidance(torch.zeros(H, A), torch.zeros(H + 1))


def test_rtc_through_the_torch_engine_moves_the_chunk_toward_the_prefix():
    """Random halo-tiny weights: meaningless actions, but the VJP runs through the real action
    expert against the cached prefix and must pull the chunk toward the target."""
    from halo_ros.engine.interface import Observation
    from halo_ros.engine.loading import EngineConfig, load_engine

    torch.set_num_threads(1)
    engine = load_engine(EngineConfig(image_hw=(56, 56), chunk_length=16, flow_steps=4))
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 255, (56, 56, 3), dtype=np.uint8) for c in engine.info.cameras}
    observation = Observation(1, images, np.zeros(14, np.float32))
    noise = rng.standard_normal((16, 14), dtype=np.float32)
    free = engine.act(observation, None, noise).actions
    target = free + 0.5
    plan = plan_seam(SeamMode.RTC, target[:10], 16, 3, 4)
    guided = engine.act(observation, None, noise, plan).actions
    assert np.abs(guided[:3] - target[:3]).mean() < 0.8 * np.abs(free[:3] - target[:3]).mean()


def test_harness_rtc_cuts_the_seam_jump():
    from halo_ros.runtime.seam_eval import HarnessConfig, evaluate

    rows = evaluate(HarnessConfig(ticks=300), delays=(4,), modes=('none', 'rtc_linear'))
    none, rtc = rows
    assert none['seams'] >= 20 and rtc['seams'] == none['seams']
    assert rtc['arm_jump_p95'] < 0.35 * none['arm_jump_p95']
    assert rtc['grip_jump_p95'] < 0.5 * none['grip_jump_p95']
