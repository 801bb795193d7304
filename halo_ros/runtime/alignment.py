"""The one rule that aligns a new action chunk with what the robot already executed.

Two consumers play a chunk stream by it: the controller (`control.chunks.ChunkBuffer`, which
commands the actions) and the policy (`runtime.feedback.ChunkSchedule`, which replays the stream
to know what the robot executes when it plans a seam). Written once here, so they cannot drift.

- Order: a chunk of an older epoch than the newest seen is refused (made before the latest
  instruction change); within an epoch, one from an older observation or a sequence number not
  above the newest taken is refused. A newer epoch starts a new stream (seq may restart).
- First executed action: the control steps elapsed since the chunk's stamp, but never more than
  the ticks that actually executed chunk actions since then (`actions_to_drop`), so a robot at
  rest starts a fresh chunk at index 0.
- A chunk whose last point is past, or with nothing left to execute after the drop, is stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from halo_ros.runtime.delay import actions_to_drop


class Misalignment(Enum):
    OLD_EPOCH = 'old_epoch'
    OUT_OF_ORDER = 'out_of_order'
    STALE = 'stale'


class AlignmentError(ValueError):
    def __init__(self, reason: Misalignment, detail: str):
        super().__init__(f'{reason.value}: {detail}')
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StreamPosition:
    """Where a chunk stands in its policy's stream."""

    epoch: int
    seq: int
    stamp_ns: int  # observation time the chunk was computed from


def check_order(chunk: StreamPosition, newest: StreamPosition | None, epoch: int) -> None:
    """AlignmentError unless `chunk` may follow `newest` (the last chunk taken; None: none yet)
    in a stream whose newest epoch is `epoch`."""
    if chunk.epoch < epoch:
        raise AlignmentError(Misalignment.OLD_EPOCH, f'epoch {chunk.epoch} < {epoch}')
    if (
        newest is not None
        and chunk.epoch == newest.epoch
        and (chunk.stamp_ns < newest.stamp_ns or chunk.seq <= newest.seq)
    ):
        raise AlignmentError(
            Misalignment.OUT_OF_ORDER,
            f'seq {chunk.seq} stamp {chunk.stamp_ns} after seq {newest.seq} '
            f'stamp {newest.stamp_ns}',
        )


def steps_to_drop(stamp_ns: int, now_ns: int, period_ns: int, consumed: int, span_ns: int) -> int:
    """Control steps of the chunk to skip when it takes over at `now_ns`: the steps elapsed since
    `stamp_ns`, clamped to `consumed` (ticks that executed chunk actions since the stamp).
    AlignmentError STALE when the chunk's last point (`span_ns` after its first) is past, or the
    steps to drop pass it."""
    if now_ns > stamp_ns + span_ns:
        late_ms = (now_ns - stamp_ns - span_ns) / 1e6
        raise AlignmentError(Misalignment.STALE, f'its last point was meant {late_ms:.1f} ms ago')
    elapsed = max(0, (now_ns - stamp_ns) // period_ns)
    drop = actions_to_drop(elapsed, consumed)
    if drop * period_ns > span_ns:
        raise AlignmentError(Misalignment.STALE, f'{drop} steps to drop, chunk spans {span_ns} ns')
    return drop


def align(
    chunk: StreamPosition,
    newest: StreamPosition | None,
    epoch: int,
    *,
    now_ns: int,
    period_ns: int,
    consumed: int,
    span_ns: int,
) -> int:
    """The whole rule for a chunk taking over at `now_ns`: `check_order`, then `steps_to_drop`
    (returned); AlignmentError says why it may not."""
    check_order(chunk, newest, epoch)
    return steps_to_drop(chunk.stamp_ns, now_ns, period_ns, consumed, span_ns)
