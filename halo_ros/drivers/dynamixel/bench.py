"""Benchmark the Dynamixel driver on virtual buses: round trip per bus, CPU share at 50 Hz x 4.

The four virtual ALOHA arms run in a child process (`halo-ros virtual-bus`), so the CPU time
measured here (time.process_time / getrusage of this process) is the driver's alone. Two port
handlers are compared: the SDK's own PortHandler, whose reply wait busy-polls, and ours
(QuietPortHandler), which waits in select(). A pty answers in microseconds, so the CPU runs are
repeated with a reply latency standing in for wire time plus the USB adapter's latency timer.
"""

import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from dynamixel_sdk import PortHandler

from halo_ros.drivers.aloha_arm import AlohaArm, ArmCommand
from halo_ros.drivers.aloha_arm_set import ArmSet
from halo_ros.drivers.aloha_calibration import ArmName, load
from halo_ros.drivers.aloha_motors import all_motors, primary_ids
from halo_ros.drivers.dynamixel.bus import DynamixelBus, DynamixelCommError
from halo_ros.drivers.dynamixel.tables import Register
from halo_ros.paths import calibration_file

log = logging.getLogger(__name__)

RATE_HZ = 50.0


def add_arguments(parser) -> None:
    parser.add_argument('--calibration', default=None, help='default calibration/sim_aloha.yaml')
    parser.add_argument('--round-trips', type=int, default=300, help='round trips per bus')
    parser.add_argument('--seconds', type=float, default=3.0, help='duration of each 50 Hz run')
    parser.add_argument(
        '--reply-latency-ms',
        type=float,
        default=3.0,
        help='emulated wire + USB latency for the second set of CPU runs (9-servo read at 1 Mbps '
        '~2.2 ms on the wire + 1 ms latency timer)',
    )
    parser.add_argument('--json', default=None, help='write the results here')


class _VirtualArms:
    """The four virtual buses in a child process."""

    def __init__(self, calibration_path: Path, run_dir: Path, reply_latency_ms: float) -> None:
        env = {**os.environ, 'HALO_ROS_RUN_DIR': str(run_dir)}
        command = [
            sys.executable,
            '-m',
            'halo_ros.cli',
            'virtual-bus',
            '--calibration',
            str(calibration_path),
            '--reply-latency-ms',
            str(reply_latency_ms),
        ]
        for name in ArmName:
            command += ['--arm', name.value]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        for _ in ArmName:
            line = self.process.stdout.readline()  # one line per arm once it serves
            if not line:
                self.close()
                raise RuntimeError(f'virtual-bus exited with {self.process.poll()} before serving')

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _open_buses(calibration, stock: bool) -> dict[ArmName, DynamixelBus]:
    buses = {}
    for name, arm in calibration.arms.items():
        port = PortHandler(arm.port) if stock else None
        bus = DynamixelBus(
            arm.port,
            baud_rate=arm.baud_rate,
            latency_timer_ms=arm.latency_timer_ms,
            max_attempts=arm.max_attempts,
            port_handler=port,
        )
        bus.open()
        buses[name] = bus
    return buses


def _goals(bus: DynamixelBus, model) -> tuple[tuple[int, ...], dict[int, int]]:
    ids = tuple(m.id for m in all_motors(model))
    reading = bus.read_state(ids)
    goals = {i: int(reading.position_ticks[ids.index(i)]) for i in primary_ids(model)}
    return ids, goals  # torque stays off: rewriting the present pose moves nothing


def round_trips(calibration, count: int) -> dict:
    buses = _open_buses(calibration, stock=False)
    results = {}
    try:
        for name, bus in buses.items():
            ids, goals = _goals(bus, calibration.arm(name).model)
            read_ms, write_ms = [], []
            for _ in range(count):
                t0 = time.perf_counter()
                bus.read_state(ids)
                t1 = time.perf_counter()
                bus.sync_write(Register.GOAL_POSITION, goals)
                t2 = time.perf_counter()
                read_ms.append((t1 - t0) * 1e3)
                write_ms.append((t2 - t1) * 1e3)
            total = np.add(read_ms, write_ms)
            results[name.value] = {
                'sync_read_ms_p50': float(np.percentile(read_ms, 50)),
                'sync_read_ms_p99': float(np.percentile(read_ms, 99)),
                'sync_write_ms_p50': float(np.percentile(write_ms, 50)),
                'round_trip_ms_p50': float(np.percentile(total, 50)),
                'round_trip_ms_p99': float(np.percentile(total, 99)),
                'round_trip_ms_max': float(np.max(total)),
                'failed_attempts': bus.failed_attempts,
            }
    finally:
        for bus in buses.values():
            bus.close()
    return results


def cpu_at_50hz(calibration, seconds: float, *, stock: bool) -> dict:
    """Four bus threads, each one sync read + one sync write per 20 ms tick on a deadline."""
    buses = _open_buses(calibration, stock=stock)
    work = {name: _goals(bus, calibration.arm(name).model) for name, bus in buses.items()}
    ticks = {name: [] for name in buses}
    failures = {name: 0 for name in buses}
    start_gate = threading.Barrier(len(buses) + 1)
    period = 1.0 / RATE_HZ

    def loop(name):
        bus, (ids, goals) = buses[name], work[name]
        start_gate.wait()
        deadline = time.monotonic()
        end = deadline + seconds
        while deadline < end:
            t0 = time.perf_counter()
            try:
                bus.read_state(ids)
                bus.sync_write(Register.GOAL_POSITION, goals)
            except DynamixelCommError:
                failures[name] += 1
            ticks[name].append((time.perf_counter() - t0) * 1e3)
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))  # the bus thread sleeps to the tick

    threads = [threading.Thread(target=loop, args=(n,)) for n in buses]
    for thread in threads:
        thread.start()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.monotonic()
    start_gate.wait()
    for thread in threads:
        thread.join()
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    for bus in buses.values():
        bus.close()
    all_ticks = np.concatenate([np.array(t) for t in ticks.values()])
    return {
        'port_handler': 'sdk PortHandler (busy-poll)' if stock else 'QuietPortHandler (select)',
        'cpu_share_of_one_core': cpu_s / wall_s,
        'user_s': usage1.ru_utime - usage0.ru_utime,
        'system_s': usage1.ru_stime - usage0.ru_stime,
        'tick_io_ms_p50': float(np.percentile(all_ticks, 50)),
        'tick_io_ms_p99': float(np.percentile(all_ticks, 99)),
        'ticks': int(all_ticks.size),
        'failed_ticks': sum(failures.values()),
    }


def arms_per_tick(calibration, seconds: float, *, parallel: bool) -> dict:
    """The controller's view: all four AlohaArms read and written once per 50 Hz tick."""
    arm_set = ArmSet({name: AlohaArm(arm) for name, arm in calibration.arms.items()})
    tick_ms = []
    try:
        arm_set.configure()
        arm_set.activate()
        period = 1.0 / RATE_HZ
        cpu0, wall0 = time.process_time(), time.monotonic()
        deadline = wall0
        while deadline < wall0 + seconds:
            t0 = time.perf_counter()
            if parallel:
                states = arm_set.read()
                arm_set.write({n: ArmCommand.from_vector(s.position()) for n, s in states.items()})
            else:
                for arm in arm_set.arms.values():
                    arm.write(ArmCommand.from_vector(arm.read().position()))
            tick_ms.append((time.perf_counter() - t0) * 1e3)
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))
        cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        arm_set.close()
    return {
        'mode': 'ArmSet (parallel buses)' if parallel else 'sequential arms',
        'cpu_share_of_one_core': cpu_s / wall_s,
        'tick_io_ms_p50': float(np.percentile(tick_ms, 50)),
        'tick_io_ms_p99': float(np.percentile(tick_ms, 99)),
        'ticks': len(tick_ms),
    }


def run(args) -> int:
    calibration_path = Path(args.calibration or calibration_file('sim_aloha.yaml'))
    results = {
        'machine': f'{platform.node()} {platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}',
        'rate_hz': RATE_HZ,
    }
    with tempfile.TemporaryDirectory(prefix='halo_ros_bench_') as run_dir:
        calibration = load(calibration_path, environ={**os.environ, 'HALO_ROS_RUN_DIR': run_dir})
        for latency_ms in (0.0, args.reply_latency_ms):
            arms = _VirtualArms(calibration_path, Path(run_dir), latency_ms)
            try:
                if latency_ms == 0.0:
                    results['round_trip_pty'] = round_trips(calibration, args.round_trips)
                for stock in (True, False):
                    key = f'cpu_latency_{latency_ms:g}ms_{"sdk" if stock else "quiet"}'
                    results[key] = cpu_at_50hz(calibration, args.seconds, stock=stock)
                    results[key]['reply_latency_ms'] = latency_ms
                if latency_ms:
                    for parallel in (False, True):
                        mode = 'parallel' if parallel else 'sequential'
                        key = f'arms_latency_{latency_ms:g}ms_{mode}'
                        results[key] = arms_per_tick(calibration, args.seconds, parallel=parallel)
                        results[key]['reply_latency_ms'] = latency_ms
            finally:
                arms.close()
    _print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _print_table(results: dict) -> None:
    print(f'machine: {results["machine"]}')
    print('\nsync read (9 servos, 10 bytes) + sync write (7 goals) per bus, pty, no reply latency')
    print(
        f'{"bus":<16}{"read p50":>10}{"read p99":>10}{"write p50":>11}'
        f'{"rt p50":>9}{"rt p99":>9}{"rt max":>9}  ms'
    )
    for name, r in results['round_trip_pty'].items():
        print(
            f'{name:<16}{r["sync_read_ms_p50"]:>10.3f}{r["sync_read_ms_p99"]:>10.3f}'
            f'{r["sync_write_ms_p50"]:>11.3f}{r["round_trip_ms_p50"]:>9.3f}'
            f'{r["round_trip_ms_p99"]:>9.3f}{r["round_trip_ms_max"]:>9.3f}'
        )
    print('\ndriver CPU at 50 Hz, four buses (share of one core; emulators in another process)')
    print(
        f'{"port handler":<30}{"latency":>9}{"cpu":>8}{"user s":>8}{"sys s":>8}'
        f'{"io p50":>8}{"io p99":>8}{"fail":>6}'
    )
    for key, r in results.items():
        if key.startswith('cpu_'):
            print(
                f'{r["port_handler"]:<30}{r["reply_latency_ms"]:>7.1f}ms{r["cpu_share_of_one_core"]:>7.1%}'
                f'{r["user_s"]:>8.2f}{r["system_s"]:>8.2f}{r["tick_io_ms_p50"]:>8.2f}'
                f'{r["tick_io_ms_p99"]:>8.2f}{r["failed_ticks"]:>6}'
            )
    print("\nfour AlohaArms per 50 Hz tick: read() + write() each (the controller's hot path)")
    print(f'{"mode":<30}{"latency":>9}{"cpu":>8}{"io p50":>8}{"io p99":>8}')
    for key, r in results.items():
        if key.startswith('arms_'):
            print(
                f'{r["mode"]:<30}{r["reply_latency_ms"]:>7.1f}ms{r["cpu_share_of_one_core"]:>7.1%}'
                f'{r["tick_io_ms_p50"]:>8.2f}{r["tick_io_ms_p99"]:>8.2f}'
            )
