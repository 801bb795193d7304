"""The policy and controller side of the synthetic episode: chunks, reasoning, ticks, diagnostics.

What a policy episode adds to the joints and cameras of `synthetic.pick_place_messages`, on a
fixed schedule so tests know the answer: a chunk every `CHUNK_PERIOD_S` (observation at
k * period, received `chunk_latency_ms(k)` later, taking over on the first tick after that), a
reasoning cycle with a subgoal image every `REASONING_PERIOD_S`, a controller tick
(`halo/control_state`) per joint sample, and 1 Hz diagnostics whose `drops_stale` counter rises by
one a second. After the task (`duration_s()`) the operator intervenes: TELEOP, no chunk.
"""

import math
from dataclasses import asdict

import numpy as np

from halo_ros.control.control_state import ChunkPosition, ControlState
from halo_ros.control.modes import Mode, Phase
from halo_ros.reasoning import Thought
from halo_ros.recording import topics as T
from halo_ros.recording.topics import COMMAND_JOINT_NAMES
from halo_ros.runtime.reasoning_message import ReasoningMessage

CHUNK_PERIOD_S = 0.5
CHUNK_LENGTH = 50
CONTROL_DT_NS = 20_000_000
REASONING_PERIOD_S = 1.0
REASONING_LATENCY_MS = 400.0
SUBGOAL_HW = (32, 40)


def chunk_latency_ms(k: int) -> float:
    return 150.0 + 10.0 * (k % 5)


def chunk_observations_s(total_s: float) -> list[float]:
    return [k * CHUNK_PERIOD_S for k in range(int(total_s / CHUNK_PERIOD_S))]


def reasoning_observations_s(total_s: float) -> list[float]:
    return [k * REASONING_PERIOD_S for k in range(int(total_s / REASONING_PERIOD_S))]


def policy_events(ts, header, start_ns: int, total_s: float, joint_hz: float, task_s: float):
    """(receive_ns, stamp_ns, topic, msgtype, msg) of the policy side, unsorted."""
    from halo_ros.recording.synthetic import INSTRUCTION, PICK_PLACE_PHASES, pick_place_state

    JointTrajectory = ts.types[T.JOINT_TRAJECTORY]
    Point = ts.types['trajectory_msgs/msg/JointTrajectoryPoint']
    Duration = ts.types['builtin_interfaces/msg/Duration']
    String = ts.types[T.STRING]
    Image = ts.types[T.IMAGE]
    Array = ts.types[T.DIAGNOSTIC_ARRAY]
    Status = ts.types['diagnostic_msgs/msg/DiagnosticStatus']
    KeyValue = ts.types['diagnostic_msgs/msg/KeyValue']

    def ns(t_s: float) -> int:
        return start_ns + round(t_s * 1e9)

    def subtask(t_s: float) -> str:
        bounds = np.cumsum([p.duration_s for p in PICK_PLACE_PHASES])
        return PICK_PLACE_PHASES[min(int(np.searchsorted(bounds, t_s, 'right')), 4)].name

    events = []
    reasoning_s = reasoning_observations_s(total_s)
    for k, t in enumerate(reasoning_s):
        stamp, published = ns(t), ns(t) + round(REASONING_LATENCY_MS * 1e6)
        thought = Thought(plan='reach; grasp; transfer; release; retreat', subtask=subtask(t))
        reasoning = ReasoningMessage(
            **asdict(thought),
            text=thought.text(),
            instruction=INSTRUCTION,
            context_version=k,
            epoch=1,
            accepted=True,
            observation_stamp_ns=stamp,
            latency_ms=REASONING_LATENCY_MS,
        )
        msg = String(data=reasoning.to_json())
        events.append((published, published, T.REASONING_TOPIC, T.STRING, msg))
        h, w = SUBGOAL_HW
        pixels = np.full((h, w, 3), (40 * k % 256, 200, 90), np.uint8)
        image = Image(
            header=header(stamp, 'subgoal'),
            height=h,
            width=w,
            encoding='rgb8',
            is_bigendian=0,
            step=w * 3,
            data=pixels.reshape(-1),
        )
        events.append((published + 100_000, stamp, T.SUBGOAL_IMAGE_TOPIC, T.IMAGE, image))

    took_over = []  # (receive_ns, seq)
    for k, t in enumerate(chunk_observations_s(total_s)):
        stamp = ns(t)
        received = stamp + round(chunk_latency_ms(k) * 1e6)
        delay = math.ceil(chunk_latency_ms(k) * 1e6 / CONTROL_DT_NS)
        published = [ns(r) + round(REASONING_LATENCY_MS * 1e6) for r in reasoning_s]
        context = max((j for j, p in enumerate(published) if p <= stamp), default=-1)
        points = [
            Point(
                positions=pick_place_state(t + i * CONTROL_DT_NS / 1e9).astype(np.float64),
                velocities=np.zeros(0),
                accelerations=np.zeros(0),
                effort=np.zeros(0),
                time_from_start=Duration(sec=0, nanosec=i * CONTROL_DT_NS),
            )
            for i in range(CHUNK_LENGTH)
        ]
        msg = JointTrajectory(
            header=header(stamp, f'halo:epoch=1;seq={k};ctx={context};d={delay}'),
            joint_names=list(COMMAND_JOINT_NAMES),
            points=points,
        )
        events.append((received, stamp, T.ACTION_CHUNK_TOPIC, T.JOINT_TRAJECTORY, msg))
        took_over.append((received, k))

    for tick in range(int(total_s * joint_hz)):
        stamp = start_ns + int(tick / joint_hz * 1e9)
        policy = (stamp - start_ns) / 1e9 < task_s
        seq = max((s for r, s in took_over if r <= stamp), default=None)
        state = ControlState(
            tick=tick,
            stamp_ns=stamp,
            mode=Mode.POLICY if policy else Mode.TELEOP,
            phase=Phase.FOLLOWING_CHUNK if policy else Phase.TRACKING_LEADERS,
            intervention=not policy,
            chunk=ChunkPosition(1, seq, 1.0) if policy and seq is not None else None,
            limits=(),
            period_error_ms=0.0,
            tick_ms=0.0,
        )
        msg = String(data=state.to_json())
        events.append((stamp + 300_000, stamp, T.CONTROL_STATE_TOPIC, T.STRING, msg))

    for second in range(int(total_s)):
        stamp = ns(second + 0.5)
        statuses = [
            Status(
                level=0,
                name='halo_ros: policy',
                message='producing chunks',
                hardware_id='/policy',
                values=[KeyValue(key='drops_stale', value=str(second + 3))],
            ),
            Status(
                level=1 if second == 1 else 0,
                name='halo_ros: controller',
                message='faults this second: missed_ticks' if second == 1 else 'POLICY',
                hardware_id='/controller',
                values=[KeyValue(key='missed_ticks', value=str(7 if second >= 1 else 5))],
            ),
        ]
        msg = Array(header=header(stamp), status=statuses)
        events.append((stamp, stamp, 'diagnostics', T.DIAGNOSTIC_ARRAY, msg))
    return events
