"""Controller 50 Hz period error and CPU share, with the simulator and policy node beside it.

Starts three processes -- the simulator (virtual Dynamixel buses, the scripted operator on the
leader arms), the policy node (halo-tiny on the CPU, random weights unless --checkpoint) and the
controller node -- puts the controller in --mode (teleop by default: every tick reads the leaders
and writes the followers; the policy's chunks are produced and received meanwhile), and measures
for --duration seconds from `halo/control_state` (every tick's period error) and `diagnostics`
(missed ticks):

- period error = tick start - its scheduled deadline on the monotonic clock (DESIGN.md);
  p50 / p99 / max, and missed ticks (a full period late);
- CPU share of each process (user + system time / wall time, in % of one core).
"""

import json
import logging
import os
import time

import numpy as np

from halo_ros import rosenv
from halo_ros.benchmarks import report
from halo_ros.supervisor import NodeProcess

log = logging.getLogger(__name__)

_CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def add_arguments(parser) -> None:
    parser.add_argument(
        '--duration', type=float, default=60.0, help='seconds measured (the issue targets 600)'
    )
    parser.add_argument(
        '--mode',
        choices=('hold', 'teleop', 'policy'),
        default='teleop',
        help='controller mode while measuring',
    )
    parser.add_argument('--no-policy', action='store_true', help='no policy node')
    parser.add_argument(
        '--realtime-priority',
        type=int,
        default=0,
        help='SCHED_FIFO priority of the control loop (0: normal thread)',
    )
    parser.add_argument('--checkpoint', default='', help='halo-tiny weights (default random)')
    parser.add_argument('--camera-size', type=int, nargs=2, default=(160, 120), metavar=('W', 'H'))
    parser.add_argument('--run-dir', default=None, help='node logs (default runs/bench-...)')
    parser.add_argument('--json', help='write the results here')


def _cpu_s(pid: int) -> float:
    with open(f'/proc/{pid}/stat', encoding='ascii') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime


def run(args) -> int:
    domain = int(os.environ.get('ROS_DOMAIN_ID') or rosenv.random_domain_id())
    rosenv.apply(domain)
    run_dir = args.run_dir or os.path.join('runs', time.strftime('bench-controller-%Y%m%d-%H%M%S'))
    os.makedirs(run_dir, exist_ok=True)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory

    width, height = args.camera_size
    processes = {
        'sim': NodeProcess(
            'halo_ros.nodes.sim_node',
            {
                'operator': 'leaders',
                'camera_width': width,
                'camera_height': height,
            },
            log_path=os.path.join(run_dir, 'sim_node.log'),
        ),
        'controller': NodeProcess(
            'halo_ros.nodes.controller_node',
            {'realtime_priority': args.realtime_priority},
            log_path=os.path.join(run_dir, 'controller_node.log'),
        ),
    }
    if not args.no_policy:
        params = {
            'image_width': width,
            'image_height': height,
            'chunk_rate_hz': 5.0,
            'threads': 1,
            'instruction': 'transfer the cube to the other arm',
        }
        if args.checkpoint:
            params['checkpoint'] = args.checkpoint
        processes['policy'] = NodeProcess(
            'halo_ros.nodes.policy_node', params, log_path=os.path.join(run_dir, 'policy_node.log')
        )
    for process in processes.values():
        process.start()
    rclpy.init()
    node = rclpy.create_node('bench_controller')
    ticks: dict[int, dict] = {}
    missed = []
    chunks = [0]

    def on_state(msg):
        state = json.loads(msg.data)
        ticks[state['tick']] = state

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name == 'halo_ros: controller':
                values = {kv.key: kv.value for kv in status.values}
                missed.append(int(values['missed_ticks']))

    node.create_subscription(String, 'halo/control_state', on_state, QoSProfile(depth=500))
    node.create_subscription(DiagnosticArray, 'diagnostics', on_diagnostics, 10)
    node.create_subscription(
        JointTrajectory, 'halo/action_chunk', lambda _: chunks.__setitem__(0, chunks[0] + 1), 10
    )

    def spin(seconds: float, until=None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until is not None and until():
                return True
            if not all(p.running for p in processes.values()):
                dead = [n for n, p in processes.items() if not p.running]
                raise RuntimeError(f'{dead} exited; see the logs in {run_dir}')
            rclpy.spin_once(node, timeout_sec=0.02)
        return until is None

    try:
        if not spin(120, lambda: len(ticks) > 50):
            raise RuntimeError(f'no controller ticks within 120 s; see {run_dir}')
        if 'policy' in processes and not spin(180, lambda: chunks[0] >= 3):
            log.warning('the policy produced no chunks within 180 s; measuring anyway')
        if args.mode != 'hold':
            client = node.create_client(Trigger, f'/controller/engage_{args.mode}')
            client.wait_for_service(timeout_sec=30)
            future = client.call_async(Trigger.Request())
            spin(15, future.done)
            log.info('engage_%s: %s', args.mode, future.result())
        spin(2.0)
        first_tick, missed_before, chunks_before = max(ticks), (missed or [0])[-1], chunks[0]
        pid = processes['controller'].process.pid
        cpu = {name: _cpu_s(p.process.pid) for name, p in processes.items()}
        start = time.monotonic()
        spin(args.duration)
        wall = time.monotonic() - start
        cpu = {name: (_cpu_s(p.process.pid) - cpu[name]) / wall for name, p in processes.items()}
        spin(2.0, lambda: missed and len(missed) > 1)
        last_tick = max(ticks)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for process in reversed(list(processes.values())):
            process.stop()

    window = [ticks[t] for t in range(first_tick + 1, last_tick + 1) if t in ticks]
    errors = np.array([s['period_error_ms'] for s in window])
    tick_ms = np.array([s['tick_ms'] for s in window])
    modes = {}
    for s in window:
        modes[f'{s["mode"]}/{s["phase"]}'] = modes.get(f'{s["mode"]}/{s["phase"]}', 0) + 1
    row = {
        'duration_s': round(wall, 1),
        'ticks': last_tick - first_tick,
        'p50_ms': float(np.percentile(errors, 50)),
        'p99_ms': float(np.percentile(errors, 99)),
        'max_ms': float(errors.max()),
        'missed': missed[-1] - missed_before if missed else -1,
        'tick_p50_ms': float(np.percentile(tick_ms, 50)),
        'tick_p99_ms': float(np.percentile(tick_ms, 99)),
        'lost_msgs': (last_tick - first_tick) - len(window),
        'controller_cpu_pct': round(100 * cpu['controller'], 1),
        'sim_cpu_pct': round(100 * cpu['sim'], 1),
        'policy_cpu_pct': round(100 * cpu['policy'], 1) if 'policy' in cpu else '-',
        'chunks_recv': chunks[0] - chunks_before,
    }
    report(
        'controller period at 50 Hz (sim + policy in other processes)',
        [row],
        args.json,
        mode=args.mode,
        realtime_priority=args.realtime_priority,
        ticks_by_phase=modes,
        controller_pid=pid,
        run_dir=run_dir,
    )
    print(f'ticks by mode/phase: {modes}')
    return 0
