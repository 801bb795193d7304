"""Controller 50 Hz period error and CPU share, with the simulator, policy and recorder beside it.

Starts the simulator (virtual Dynamixel buses, the scripted operator on the leader arms), the
policy node (halo-tiny on the CPU, random weights unless --checkpoint), optionally the recorder
(--recorder) and the controller node, puts the controller in --mode (teleop by default: every tick
reads the leaders and writes the followers; the policy's chunks are produced and received
meanwhile), and measures for --duration seconds from `halo/control_state` (every tick's period
error), `halo/command` (what an independent subscriber receives) and `diagnostics` (missed ticks):

- period error = tick start - its scheduled deadline on the monotonic clock (DESIGN.md);
  p50 / p99 / max, and missed ticks (a full period late);
- commands received per expected (50 per second of the window): ticks that never happened or
  never reached a subscriber;
- CPU share of each process (user + system time / wall time, in % of one core).

The real-time measures (SCHED_FIFO for the loop and its bus workers, mlockall, the GC in the
loop's slack, the GIL switch interval; SCHED_FIFO for the simulator's bus replies) are on as in
config/controller.yaml unless switched off one by one (--no-fifo, --no-mlock, ...; --bare: all
off), so each can be measured with and without.
"""

import logging
import os
import time
from collections import Counter

import numpy as np

from halo_ros import rosenv
from halo_ros.benchmarks import report
from halo_ros.control.graph import ControllerGraph

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
    parser.add_argument('--recorder', action='store_true', help='record everything meanwhile')
    parser.add_argument('--no-fifo', action='store_true', help='controller loop at normal priority')
    parser.add_argument('--no-mlock', action='store_true', help='controller memory not locked')
    parser.add_argument('--no-gc', action='store_true', help='automatic garbage collection')
    parser.add_argument(
        '--no-switch-interval', action='store_true', help="Python's default 5 ms GIL interval"
    )
    parser.add_argument(
        '--bus-priority',
        type=int,
        default=50,
        help="SCHED_FIFO priority of the simulator's bus replies (0: normal threads)",
    )
    parser.add_argument('--bare', action='store_true', help='every real-time measure off')
    parser.add_argument('--checkpoint', default='', help='halo-tiny weights (default random)')
    parser.add_argument('--camera-size', type=int, nargs=2, default=(160, 120), metavar=('W', 'H'))
    parser.add_argument('--run-dir', default=None, help='node logs (default runs/bench-...)')
    parser.add_argument('--json', help='write the results here')


def _cpu_s(pid: int) -> float:
    with open(f'/proc/{pid}/stat', encoding='ascii') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime


def run(args) -> int:
    rosenv.apply(int(os.environ.get('ROS_DOMAIN_ID') or rosenv.random_domain_id()))
    run_dir = args.run_dir or os.path.join('runs', time.strftime('bench-controller-%Y%m%d-%H%M%S'))
    measures = _measures(args)
    graph = ControllerGraph(
        run_dir,
        camera_size=tuple(args.camera_size),
        checkpoint=args.checkpoint,
        policy=not args.no_policy,
        recorder=args.recorder,
        controller_config=measures['controller'],
        sim_params={'bus_reply_priority': measures['bus_reply_priority']},
    ).start()
    try:
        graph.wait_ready(chunks=not args.no_policy)
        if args.mode != 'hold':
            log.info('engage_%s: %s', args.mode, graph.call(f'/controller/engage_{args.mode}'))
        graph.spin(2.0)
        first_tick, reports = max(graph.ticks), len(graph.missed)
        missed_before = graph.missed[-1] if graph.missed else 0
        chunks_before, commands_before = graph.chunks, graph.commands
        pids = {name: p.process.pid for name, p in graph.processes.items()}
        cpu = {name: _cpu_s(pid) for name, pid in pids.items()}
        log.info('measuring for %g s', args.duration)  # a marker for whoever quiets the machine
        start = time.monotonic()
        graph.spin(args.duration)
        wall = time.monotonic() - start
        log.info('measured')
        received = graph.commands - commands_before
        cpu = {name: (_cpu_s(pids[name]) - cpu[name]) / wall for name in pids}
        last_tick = max(graph.ticks)
        graph.spin(2.5, lambda: len(graph.missed) > reports + 1)  # a report after the window
        missed = graph.missed[-1] - missed_before if len(graph.missed) > reports else -1
        chunks = graph.chunks - chunks_before
    finally:
        graph.close()

    window = [graph.ticks[t] for t in range(first_tick + 1, last_tick + 1) if t in graph.ticks]
    errors = np.array([s.period_error_ms for s in window])
    tick_ms = np.array([s.tick_ms for s in window])
    modes = dict(Counter(f'{s.mode.value}/{s.phase.value}' for s in window))

    def share(name):
        return round(100 * cpu[name], 1) if name in cpu else '-'

    row = {
        'duration_s': round(wall, 1),
        'ticks': last_tick - first_tick,
        'p50_ms': float(np.percentile(errors, 50)),
        'p99_ms': float(np.percentile(errors, 99)),
        'max_ms': float(errors.max()),
        'missed': missed,
        'tick_p50_ms': float(np.percentile(tick_ms, 50)),
        'tick_p99_ms': float(np.percentile(tick_ms, 99)),
        'lost_msgs': (last_tick - first_tick) - len(window),
        'commands_per_expected': round(received / (wall * 50.0), 4),
        **{f'{name}_cpu_pct': share(name) for name in ('controller', 'sim', 'policy', 'recorder')},
        'chunks_recv': chunks,
    }
    report(
        'controller period at 50 Hz (sim, policy, recorder in other processes)',
        [row],
        args.json,
        mode=args.mode,
        measures=measures,
        load_average=os.getloadavg(),
        ticks_by_phase=modes,
        controller_pid=pids['controller'],
        run_dir=run_dir,
    )
    print(f'ticks by mode/phase: {modes}')
    return 0


def _measures(args) -> dict:
    """The real-time measures of this run: controller settings and the simulator's bus priority."""
    controller = {}
    if args.bare or args.no_fifo:
        controller['realtime_priority'] = 0
    if args.bare or args.no_mlock:
        controller['lock_memory'] = False
    if args.bare or args.no_gc:
        controller['gc_in_slack'] = False
    if args.bare or args.no_switch_interval:
        controller['switch_interval_ms'] = 0.0
    return {'controller': controller, 'bus_reply_priority': 0 if args.bare else args.bus_priority}
