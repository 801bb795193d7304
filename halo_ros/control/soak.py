"""Soak the controller in POLICY with injected faults, and check the run and its bag.

The graph of `bench-controller` (simulator, controller, trained policy, recorder: separate
processes) for --minutes, the followers executing the policy's chunks, with the faults a real
ALOHA meets, each counted on /diagnostics:

- 1 % of all status packets with a broken CRC, on all four buses, the whole run;
- one serial port that vanishes (follower_left's pty closes) for --unplug-s and returns;
- the policy process killed (SIGKILL) and restarted;
- ROS time stepped back by --clock-step-s, and forward again 20 s later (the controller's clock
  only: the drill node, as when the policy's host keeps the true time).

The soak re-engages POLICY whenever a fault left the controller holding (an operator would).
After the run: the recorded commands are checked against every limit (`control.audit`), the bag
for completeness (every control tick recorded, nothing dropped), and the counters for each fault.
"""

import logging
import os
import time
from collections import Counter

import numpy as np

from halo_ros import rosenv
from halo_ros.benchmarks import report
from halo_ros.control.audit import landed_on, violations
from halo_ros.control.config import load_config
from halo_ros.control.control_state import ControlState
from halo_ros.control.graph import ControllerGraph
from halo_ros.control.modes import Mode, Phase
from halo_ros.drivers.aloha_calibration import load as load_calibration
from halo_ros.paths import calibration_file

log = logging.getLogger(__name__)

# When each drill starts, as a share of the run.
_UNPLUG_AT, _KILL_AT, _STEP_AT = 0.2, 0.4, 0.6
_STEP_BACK_S = 20.0  # the clock is put right again after this


def add_arguments(parser) -> None:
    parser.add_argument('--minutes', type=float, default=10.0)
    parser.add_argument('--checkpoint', default='halo-tiny-transfer-cube')
    parser.add_argument('--corrupt', type=float, default=0.01, help='share of replies with bad CRC')
    parser.add_argument('--unplug-s', type=float, default=3.0)
    parser.add_argument('--clock-step-s', type=float, default=-2.0)
    parser.add_argument('--run-dir', default=None, help='logs and the bag (default runs/soak-...)')
    parser.add_argument('--json', help='write the results here')


def validate(args) -> None:
    """ValueError naming the argument that cannot make a soak."""
    if args.minutes < 1:
        raise ValueError(f'--minutes must be >= 1 (the drills need a minute), got {args.minutes}')
    if not 0 <= args.corrupt <= 1:
        raise ValueError(f'--corrupt is a share of replies in [0, 1], got {args.corrupt}')
    if args.unplug_s <= 0:
        raise ValueError(f'--unplug-s must be > 0, got {args.unplug_s}')
    if args.clock_step_s == 0:
        raise ValueError('--clock-step-s must not be 0 (no step to count)')


def run(args) -> int:
    validate(args)
    rosenv.apply(int(os.environ.get('ROS_DOMAIN_ID') or rosenv.random_domain_id()))
    run_dir = args.run_dir or os.path.join('runs', time.strftime('soak-controller-%Y%m%d-%H%M%S'))
    graph = ControllerGraph(
        run_dir,
        checkpoint=args.checkpoint,
        recorder=True,
        sim_params={'bus_reply_priority': 50, 'bus_corrupt_probability': args.corrupt},
        controller_module='halo_ros.nodes.drill_controller_node',
    ).start()
    drills, engagements = [], 0
    try:
        graph.wait_ready(chunks=True)
        duration = args.minutes * 60
        start = time.monotonic()
        pending = [
            (_UNPLUG_AT * duration, 'unplug'),
            (_KILL_AT * duration, 'kill'),
            (_STEP_AT * duration, 'step'),
            (_STEP_AT * duration + _STEP_BACK_S, 'unstep'),
        ]
        next_engage = 0.0
        while (elapsed := time.monotonic() - start) < duration:
            if pending and elapsed >= pending[0][0]:
                drills.append(_drill(graph, pending.pop(0)[1], args, elapsed))
            held = graph.last is not None and graph.last.mode is Mode.HOLD
            if held and time.monotonic() >= next_engage:
                reply = graph.call('/controller/engage_policy')
                engagements += bool(reply and reply.success)
                next_engage = time.monotonic() + 2.0
            graph.spin(0.2)
        reports = len(graph.missed)
        graph.spin(5.0, lambda: len(graph.missed) > reports + 1)  # the final counters
        diagnostics = dict(graph.diagnostics)
    finally:
        codes = graph.close()
    result = _check(run_dir, diagnostics, drills, engagements, codes, args)
    report(
        'controller soak in POLICY with injected faults',
        [result['row']],
        args.json,
        drills=drills,
        checks=result['checks'],
        ticks_by_phase=result['ticks_by_phase'],
        counters=result['counters'],
        violations=result['violations'],
        exit_codes=codes,
        run_dir=run_dir,
    )
    return 0 if result['ok'] else 1


def _drill(graph: ControllerGraph, name: str, args, elapsed: float) -> dict:
    log.warning('drill at %.0f s: %s', elapsed, name)
    done = True
    if name == 'unplug':
        done = graph.set_parameter('sim', 'unplugged_buses', ['follower_left'])
        graph.spin(args.unplug_s)
        done &= graph.set_parameter('sim', 'unplugged_buses', [''])
    elif name == 'kill':
        graph.kill('policy')
        graph.spin(2.0)
        graph.restart('policy')
    elif name in ('step', 'unstep'):
        offset = args.clock_step_s if name == 'step' else 0.0
        done = graph.set_parameter('controller', 'clock_offset_s', offset)
    return {'at_s': round(elapsed, 1), 'drill': name, 'done': done}


def _check(run_dir, diagnostics, drills, engagements, codes, args) -> dict:
    """The bag against the limits and for completeness; the counters for each fault."""
    from halo_ros.recording.episode_meta import read_sidecar
    from halo_ros.recording.episode_reader import read_episode

    episodes = os.path.join(run_dir, 'episodes')
    data = read_episode(os.path.join(episodes, sorted(os.listdir(episodes))[-1]))
    meta = read_sidecar(data.bag_dir)
    states = [ControlState.from_json(text) for text in data.texts['control_state'].text]
    ticks = {state.tick for state in states}
    gaps = max(ticks) - min(ticks) + 1 - len(ticks)
    command = data.joints['command']
    config = load_config()
    limits = config.follower_limits(load_calibration(calibration_file(config.calibration)))
    # A hold on a following error re-syncs the command to the measured pose: in a fault hold,
    # a joint whose command landed on its measurement was re-synced, not moved (control.audit).
    in_fault = np.array([state.phase is Phase.FAULT for state in states])[:, None]
    measured = _measured(data.bag_dir, command.stamp_ns, config.period_ns)
    resynced = in_fault & landed_on(command.position, measured, limits, config.period_ns)
    # Stamps as the controller gave them: the drill's step back is no stall (no time passes),
    # its step forward reads as one (the acceleration of that one tick is not judged).
    broken = violations(
        command.position, command.stamp_ns, limits, config.period_ns, resynced=resynced
    )
    counters = {k: v for k, v in diagnostics.items() if k.startswith(FAULT_COUNTERS)}
    counters['resynced_ticks'] = int(resynced.any(axis=1).sum())
    checks = fault_checks(counters)
    checks.update(
        {
            'every drill carried out': all(drill['done'] for drill in drills),
            'no limit broken': not broken,
            'every tick in the bag': gaps == 0,
            'nothing dropped': not meta.drops,
            'clean exits': all(code == 0 for code in codes.values()),
        }
    )
    for check, passed in checks.items():
        (log.info if passed else log.error)('%s: %s', check, 'yes' if passed else 'NO')
    errors = np.array([state.period_error_ms for state in states])
    phases = Counter(f'{state.mode.value}/{state.phase.value}' for state in states)
    in_policy = sum(n for phase, n in phases.items() if phase.startswith('POLICY/'))
    row = {
        'minutes': args.minutes,
        'ticks': len(ticks),
        'gaps': gaps,
        'period_p99_ms': round(float(np.percentile(errors, 99)), 2),
        'missed': diagnostics.get('missed_ticks', '?'),
        'violations': len(broken),
        'dropped': sum(meta.drops.values()),
        'engagements': engagements,
        'in_policy_pct': round(100 * in_policy / len(states), 1),
        'checks_passed': f'{sum(checks.values())}/{len(checks)}',
    }
    return {
        'row': row,
        'counters': counters,
        'violations': [str(v) for v in broken[:20]],
        'checks': checks,
        'ticks_by_phase': dict(phases.most_common()),
        'ok': all(checks.values()),
    }


def _measured(bag_dir, stamps_ns: np.ndarray, period_ns: int) -> np.ndarray:
    """(T, 14) the followers' recorded readings of each command's tick (NaN where none).

    A tick's reading is stamped in [its stamp, its stamp + period) on the same clock; after the
    drill's step back two ticks 2 s apart share stamps, so of the readings in that window the one
    the recorder received nearest to the command is taken."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from halo_ros.recording import topics as T
    from halo_ros.recording.episode_reader import match_topic

    typestore = get_typestore(Stores.ROS2_JAZZY)
    rows = {}
    with Reader(bag_dir) as reader:
        connections = {c.topic: c for c in reader.connections}
        wanted = {
            match_topic(connections, topic): topic
            for topic in (T.COMMAND_TOPIC, *(T.joint_state_topic(a) for a in T.FOLLOWERS))
        }
        chosen = [connections[name] for name in wanted if name is not None]
        for connection, log_ns, raw in reader.messages(connections=chosen):
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            rows.setdefault(wanted[connection.topic], []).append((stamp, log_ns, msg.position))
    command_log = {stamp: log_ns for stamp, log_ns, _ in rows[T.COMMAND_TOPIC]}
    command_log_ns = np.array([command_log.get(int(s), 0) for s in stamps_ns], np.int64)
    measured = np.full((len(stamps_ns), 14), np.nan)
    for side, arm in enumerate(T.FOLLOWERS):
        readings = sorted(rows.get(T.joint_state_topic(arm), []), key=lambda r: r[0])
        stamps = np.array([r[0] for r in readings], np.int64)
        low = np.searchsorted(stamps, stamps_ns)
        high = np.searchsorted(stamps, stamps_ns + period_ns)
        for tick in np.flatnonzero(high > low):
            window = range(low[tick], high[tick])
            best = min(window, key=lambda i: abs(readings[i][1] - command_log_ns[tick]))
            measured[tick, 7 * side : 7 * side + 7] = readings[best][2]
    return measured


# The controller's diagnostics that count faults (README, Troubleshooting).
FAULT_COUNTERS = (
    'read_failures.',
    'write_failures.',
    'rejections.',
    'limits_hit.',
    'events.',
    'port_losses.',
    'port_reopens.',
    'bus_retries.',
    'following_errors.',
    'missed_ticks',
    'last_following_error',
)


def fault_checks(counters: dict[str, str]) -> dict[str, bool]:
    """Was each drilled fault counted? From the controller's diagnostics values."""

    def total(prefix: str) -> float:
        return sum(float(v) for k, v in counters.items() if k.startswith(prefix))

    return {
        'CRC errors retried and counted': total('bus_retries.') > 0,
        'port loss counted': total('port_losses.') >= 1 and total('port_reopens.') >= 1,
        'policy kill counted (watchdog)': total('events.watchdog') >= 1,
        'clock steps counted': total('events.clock_step') >= 2,
    }
