"""One alignment rule, two consumers: the controller's ChunkBuffer (which commands the actions)
and the policy's ChunkSchedule (which replays the stream to plan seams) are fed the same stream
of chunks, late, reordered, across epochs and too stale to use, and must take the same chunks and
execute the same action index at every control tick."""

import numpy as np
import pytest

from halo_ros.control.chunks import ChunkBuffer, ChunkError, ControllerChunk, Rejection
from halo_ros.runtime.alignment import AlignmentError, Misalignment, StreamPosition, check_order
from halo_ros.runtime.chunk import ChunkTag, PolicyChunk
from halo_ros.runtime.feedback import ChunkSchedule

DT = 20_000_000
H = 12


def _stream(seed: int):
    """(arrival tick, epoch, seq, stamp tick) of a policy's chunks as a controller receives them:
    one every 3-6 ticks, 0-9 ticks late, some overtaken, an instruction change (epoch + 1), a
    restarted policy (seq from 0 in a newer epoch) and a few that arrive after their last point."""
    rng = np.random.default_rng(seed)
    events, tick, seq, epoch = [], 0, 0, 0
    for n in range(60):
        tick += int(rng.integers(3, 7))
        if n == 20:
            epoch += 1
        if n == 40:
            epoch, seq = epoch + 1, 0
        late = int(rng.integers(0, 10)) if n % 17 else H + 3  # every 17th: nothing left to run
        events.append((tick + late, epoch, seq, tick))
        seq += 1
    if seed % 2:  # an old-epoch straggler after the change
        events.append((events[25][0], 0, 99, events[25][3]))
    events.sort(key=lambda e: e[0])  # arrival order: later-stamped ones can overtake
    return events


@pytest.mark.parametrize('seed', range(6))
def test_controller_and_policy_play_the_same_stream_the_same_way(seed):
    events = _stream(seed)
    buffer = ChunkBuffer(DT, max_age_ns=100 * H * DT, max_future_ns=0)
    schedule = ChunkSchedule(DT, keep=64)
    taken = {'buffer': 0, 'schedule': 0}
    last_tick = events[-1][0] + 2 * H
    pending = list(events)
    for tick in range(last_tick):
        now = tick * DT
        while pending and pending[0][0] == tick:
            _, epoch, seq, stamp_tick = pending.pop(0)
            actions = np.full((H, 14), float(seq), np.float32) + np.arange(H)[:, None]
            runtime = PolicyChunk(actions, stamp_tick * DT, DT, ChunkTag(epoch, seq, 0))
            controller = ControllerChunk(
                stamp_tick * DT, DT, actions.astype(np.float64), epoch, seq
            )
            try:
                buffer.offer(controller, now)
                took_buffer = True
            except ChunkError as error:
                assert error.reason in (
                    Rejection.OLD_EPOCH,
                    Rejection.OUT_OF_ORDER,
                    Rejection.STALE,
                )
                took_buffer = False
            took_schedule = schedule.record(runtime, received_ns=now)
            assert took_buffer == took_schedule, (tick, epoch, seq, stamp_tick)
            taken['buffer'] += took_buffer
            taken['schedule'] += took_schedule
        executing = schedule.executing(now)
        playback = buffer.step(now)
        if playback is None:
            assert executing is None, tick
        else:
            assert executing is not None, tick
            assert (playback.chunk.seq, playback.index) == (executing.tag.seq, executing.index)
    assert taken['buffer'] > 20  # the stream exercised both: most chunks were taken ...
    assert taken['buffer'] < len(events)  # ... and some refused


def test_order_rule_refuses_old_epochs_and_overtaken_chunks_but_not_a_restarted_stream():
    newest = StreamPosition(epoch=2, seq=10, stamp_ns=100)
    with pytest.raises(AlignmentError) as old:
        check_order(StreamPosition(1, 11, 200), newest, epoch=2)
    assert old.value.reason is Misalignment.OLD_EPOCH
    for overtaken in (StreamPosition(2, 11, 50), StreamPosition(2, 10, 200)):
        with pytest.raises(AlignmentError) as order:
            check_order(overtaken, newest, epoch=2)
        assert order.value.reason is Misalignment.OUT_OF_ORDER
    check_order(StreamPosition(3, 0, 60), newest, epoch=2)  # newer epoch: seq may restart
    check_order(StreamPosition(2, 11, 100), newest, epoch=2)
