"""Start a bring-up profile (sim, robot, teleop, record, serve) as supervised nodes until Ctrl-C.

The same nodes, parameters files and remaps as `ros2 launch halo_ros <profile>.launch.py`
(halo_ros/bringup/profiles.py), without ros2 launch. A crashed policy is restarted while the
controller keeps the arms; Ctrl-C (or --duration) puts the arms on hold (controller ~/hold),
closes the recorder's bag, stops every node in order and exits 0. A status line shows topic
rates, the chunk latency and the controller's mode. Logs: runs/up-<profile>-<time>/.
"""

import json
import logging
import os
import signal
import sys
import time

import yaml

from halo_ros import rosenv
from halo_ros.benchmarks import table
from halo_ros.bringup.profiles import PROFILES, TOPICS, profile
from halo_ros.bringup.supervise import NodeEvent, Supervisor

log = logging.getLogger(__name__)

STATUS_PERIOD_S = 1.0
SERVICE_TIMEOUT_S = 3.0
# Shown on the status line when published (short names keep it on one line).
_STATUS_TOPICS = {
    'cam_high/image_raw': 'cam_high',
    'follower_left/joint_states': 'joints',
    'halo/action_chunk': 'chunks',
    'halo/reasoning': 'reasoning',
}


def add_arguments(parser) -> None:
    parser.add_argument('profile', choices=sorted(PROFILES), help='what to run')
    parser.add_argument(
        '--duration',
        type=float,
        default=None,
        help='stop S seconds after every node is ready (or after --ready-timeout, if never)',
    )
    parser.add_argument(
        '--without',
        action='append',
        default=[],
        metavar='NODE',
        help='do not start this node of the profile (repeat for several)',
    )
    parser.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='NODE.PARAM=VALUE',
        help='override a parameter, e.g. controller.calibration=my_aloha.yaml',
    )
    parser.add_argument(
        '--engage',
        choices=('teleop', 'policy'),
        default=None,
        help='once ready, switch the controller to TELEOP or POLICY (~/engage_<mode>)',
    )
    parser.add_argument('--run-dir', default=None, help='logs go here (default runs/up-...)')
    parser.add_argument('--domain', type=int, default=None, help='ROS_DOMAIN_ID (default: env)')
    parser.add_argument(
        '--ready-timeout',
        type=float,
        default=180.0,
        help="seconds to wait for every node's first messages",
    )


def parse_overrides(items: list[str]) -> dict[str, dict]:
    overrides: dict[str, dict] = {}
    for item in items:
        target, sep, value = item.partition('=')
        node, dot, param = target.partition('.')
        if not (sep and dot and node and param):
            raise ValueError(f'--set {item!r}: expected NODE.PARAM=VALUE')
        overrides.setdefault(node, {})[param] = _typed(value)
    return overrides


def _typed(text: str):
    """YAML typing, as `ros2 run ... -p` does, except that a digit string with a leading zero (a
    camera serial) stays a string instead of becoming an octal or decimal number."""
    if text.isdigit() and len(text) > 1 and text.startswith('0'):
        return text
    return yaml.safe_load(text) if text else text


def run(args) -> int:
    chosen = profile(args.profile)
    rosenv.apply(args.domain)
    run_dir = args.run_dir or os.path.join('runs', time.strftime(f'up-{chosen.name}-%Y%m%d-%H%M%S'))
    supervisor = Supervisor(
        chosen, run_dir, without=frozenset(args.without), overrides=parse_overrides(args.set)
    )
    print(
        f'halo-ros up {chosen.name}: {chosen.summary}; ROS_DOMAIN_ID='
        f'{os.environ.get("ROS_DOMAIN_ID", "0")}, logs in {run_dir}',
        flush=True,
    )

    import rclpy  # after rosenv.apply: the participant reads the environment at init
    from rclpy.signals import SignalHandlerOptions

    from halo_ros.nodes.bringup_monitor import BringupMonitor

    stop = {'signal': None}

    def on_signal(signum, frame):
        stop['signal'] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # rclpy's own handler would shut the context down on Ctrl-C, before ~/hold can be called.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    monitor = BringupMonitor(dict(TOPICS))
    supervisor.start()
    started = time.monotonic()
    end = float('inf')  # --duration counts from ready: start-up time varies with the machine
    ready_at = None
    next_status = started
    try:
        while stop['signal'] is None and time.monotonic() < end and supervisor.failure is None:
            rclpy.spin_once(monitor, timeout_sec=0.05)
            ready_keys = frozenset(
                key
                for key, node in supervisor.nodes.items()
                if node.running and all(monitor.seen(t) for t in node.spec.ready_topics)
            )
            for key, event in supervisor.poll(ready_keys):
                if event is NodeEvent.RESTARTED:
                    print(f'\n{key} restarted', flush=True)
            now = time.monotonic()
            if ready_at is None and not supervisor.pending and ready_keys == set(supervisor.nodes):
                ready_at = now
                if args.duration is not None:
                    end = now + args.duration
                print(
                    f'ready after {now - started:.1f} s: {len(supervisor.nodes)} nodes', flush=True
                )
                _call_services(monitor, supervisor, 'start_services')
                if args.engage:
                    _engage(monitor, supervisor, args.engage)
            elif ready_at is None and now - started > args.ready_timeout:
                waiting = sorted(
                    {n.key for n in supervisor.pending} | (set(supervisor.nodes) - ready_keys)
                )
                log.warning('not ready after %g s: waiting for %s', args.ready_timeout, waiting)
                ready_at = float('nan')  # warn once, keep running
                if args.duration is not None:
                    end = now + args.duration
            if now >= next_status:
                next_status = now + (
                    STATUS_PERIOD_S if sys.stdout.isatty() else 5 * STATUS_PERIOD_S
                )
                _print_status(monitor, supervisor, ready_at is not None)
    finally:
        print('', flush=True)
        _call_services(monitor, supervisor, 'stop_services')  # arms to hold before anything stops
        codes = supervisor.stop()
        summary = {
            'profile': chosen.name,
            'ready_s': None if ready_at is None or ready_at != ready_at else ready_at - started,
            'failure': supervisor.failure,
            'absent': sorted(supervisor.absent),
            'exit_codes': codes,
            'restarts': {k: n.restarts for k, n in supervisor.nodes.items()},
            'topics': {t: s.count for t, s in monitor.stats.items()},
        }
        with open(os.path.join(run_dir, 'summary.json'), 'w', encoding='utf-8') as f:
            json.dump(summary, f, indent=1)
        monitor.destroy_node()
        rclpy.try_shutdown()
    rows = [{'topic': t, 'messages': s.count} for t, s in sorted(monitor.stats.items()) if s.count]
    print(table(rows) if rows else 'no messages arrived')
    if supervisor.failure:
        print(f'stopped because {supervisor.failure}; see {run_dir}')
        return 1
    gave_up = sorted(k for k, n in supervisor.nodes.items() if n.down and n.exit_codes[-1:] != [0])
    if gave_up:  # a non-essential node that crashed past its restarts: the bring-up was not whole
        print(f'stopped; {", ".join(gave_up)} kept failing and stayed down; see {run_dir}')
        return 1
    print(
        f'stopped cleanly ({"Ctrl-C" if stop["signal"] else "duration reached"}); logs in {run_dir}'
    )
    return 0


def _call_services(monitor, supervisor: Supervisor, which: str) -> None:
    for node in supervisor.nodes.values():
        for service in getattr(node.spec, which):
            if not node.running:
                continue
            name = f'/{node.spec.node_name}/{service}'
            ok, message = monitor.call_trigger(name, SERVICE_TIMEOUT_S)
            (log.info if ok else log.warning)('%s: %s', name, message or ('ok' if ok else 'failed'))


def _engage(monitor, supervisor: Supervisor, mode: str) -> None:
    controller = supervisor.nodes.get('controller')
    if controller is None or not controller.running:
        log.warning('--engage %s: no controller is running', mode)
        return
    name = f'/{controller.spec.node_name}/engage_{mode}'
    ok, message = monitor.call_trigger(name, SERVICE_TIMEOUT_S)
    (log.info if ok else log.warning)('%s: %s', name, message or ('ok' if ok else 'failed'))


def _print_status(monitor, supervisor: Supervisor, ready: bool) -> None:
    rates = monitor.rates_hz()
    parts = [time.strftime('%H:%M:%S'), 'ready' if ready else 'starting']
    for topic, label in _STATUS_TOPICS.items():
        if monitor.seen(topic):
            parts.append(f'{label} {rates.get(topic, 0.0):.1f} Hz')
    if monitor.seen('halo/action_chunk'):
        parts.append(f'latency p50 {monitor.policy_latency_ms} ms')
    parts.append(f'mode {monitor.mode()}')
    if supervisor.pending:
        parts.append('waiting: ' + ','.join(s.key for s in supervisor.pending))
    down = [k for k, n in supervisor.nodes.items() if not n.running]
    if down:
        parts.append(f'down: {",".join(down)}')
    restarts = {k: n.restarts for k, n in supervisor.nodes.items() if n.restarts}
    if restarts:
        parts.append('restarts ' + ','.join(f'{k}={v}' for k, v in restarts.items()))
    line = ' | '.join(parts)
    if sys.stdout.isatty():
        sys.stdout.write('\r\x1b[2K' + line)
        sys.stdout.flush()
    else:
        print(line, flush=True)
