"""Delay estimate (warm-up excluded, sliding percentile), the dropped-prefix clamp, and the chunk
schedule that replays the controller's rule (what the actor plans seams against)."""

import numpy as np
import pytest

from halo_ros.runtime.chunk import ChunkTag, PolicyChunk
from halo_ros.runtime.delay import DelayEstimator, actions_to_drop
from halo_ros.runtime.feedback import ChunkSchedule

DT = 20_000_000  # 20 ms in ns


def test_delay_estimate_excludes_warmup_and_uses_a_high_percentile():
    estimate = DelayEstimator(0.02, window=10, percentile=90, warmup=2)
    assert estimate.steps() == 0  # nothing measured yet
    estimate.add(2.0)  # cold start: a 2 s first call
    assert estimate.steps() == 100  # warm-up: the latest sample, nothing better known yet
    estimate.add(0.5)
    assert not estimate.warmed_up
    for _ in range(9):
        estimate.add(0.03)
    estimate.add(0.07)
    assert estimate.warmed_up
    assert estimate.steps() == 2  # p90 of nine 30 ms and one 70 ms: 34 ms -> 2 steps; 2 s gone
    assert estimate.latency_s() == pytest.approx(0.034)


def test_delay_window_slides_and_exact_multiples_do_not_round_up():
    estimate = DelayEstimator(0.02, window=3, percentile=100, warmup=0)
    for latency in (0.2, 0.04, 0.04, 0.04):
        estimate.add(latency)
    assert estimate.steps() == 2  # the 200 ms sample slid out; 40 ms is exactly 2 steps
    with pytest.raises(ValueError, match='finite'):
        estimate.add(float('nan'))


@pytest.mark.parametrize(
    ('estimated', 'consumed', 'dropped'), [(5, 9, 5), (21, 0, 0), (21, 3, 3), (0, 4, 0), (-1, 2, 0)]
)
def test_dropped_actions_never_exceed_the_actions_consumed(estimated, consumed, dropped):
    assert actions_to_drop(estimated, consumed) == dropped


def _chunk(seq, stamp_ns, value=0.0, *, epoch=1, length=10):
    actions = value + np.arange(length, dtype=np.float32)[:, None] * np.ones((1, 14), np.float32)
    return PolicyChunk(actions, stamp_ns, DT, ChunkTag(epoch, seq, 0))


def test_first_chunk_starts_at_index_zero_even_when_it_landed_late():
    schedule = ChunkSchedule(DT)
    assert schedule.record(_chunk(0, 0), received_ns=7 * DT)  # 7 steps late, robot at rest
    assert schedule.start_index(0) == 0
    assert schedule.executing(7 * DT).index == 0
    assert schedule.executing(9 * DT).index == 2


def test_next_chunk_drops_what_was_consumed_since_its_stamp():
    schedule = ChunkSchedule(DT)
    schedule.record(_chunk(0, 0), received_ns=0)
    assert schedule.record(_chunk(1, 4 * DT, 100.0), received_ns=7 * DT)
    assert schedule.start_index(1) == 3  # 3 ticks ran between its stamp and its arrival
    tag, action = schedule.command(7 * DT)
    assert tag.seq == 1 and action[0] == 103.0
    assert schedule.command(6 * DT)[0].seq == 0  # before it arrived the old chunk ran
    assert schedule.consumed_since(4 * DT, 9 * DT) == 5


def test_a_chunk_after_the_robot_went_idle_drops_only_what_ran():
    schedule = ChunkSchedule(DT)
    schedule.record(_chunk(0, 0, length=5), received_ns=0)  # runs ticks 0..4, then holds
    assert schedule.executing(6 * DT) is None
    schedule.record(_chunk(1, 3 * DT, 50.0), received_ns=10 * DT)
    assert schedule.start_index(1) == 2  # 7 steps elapsed, but only ticks 3 and 4 executed


def test_older_epoch_and_stale_sequence_are_discarded():
    schedule = ChunkSchedule(DT)
    assert schedule.record(_chunk(5, 0, epoch=2), received_ns=0)
    assert not schedule.record(_chunk(6, DT, epoch=1), received_ns=DT)  # older epoch
    assert not schedule.record(_chunk(4, DT, epoch=2), received_ns=DT)  # older seq
    assert not schedule.record(_chunk(7, 0, epoch=2, length=3), received_ns=20 * DT)  # all past
    assert schedule.command(DT)[0].seq == 5


def test_planned_tail_is_aligned_to_the_new_observation_and_ends_with_the_chunk():
    schedule = ChunkSchedule(DT)
    assert schedule.planned(0, 5).shape[0] == 0  # nothing executing: nothing to join
    schedule.record(_chunk(0, 0), received_ns=0)
    tail = schedule.planned(6 * DT, 8)
    assert tail.shape == (4, 14)  # indices 6..9 of the only chunk
    np.testing.assert_array_equal(tail[:, 0], [6, 7, 8, 9])
    schedule.record(_chunk(1, 4 * DT, 100.0), received_ns=7 * DT)
    tail = schedule.planned(5 * DT, 4)  # t=5,6 from chunk 0; from t=7 on chunk 1 (index 3..)
    np.testing.assert_array_equal(tail[:, 0], [5, 6, 103, 104])
