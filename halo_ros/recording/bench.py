"""Benchmark the recorder at nominal robot load: messages sent vs written, writer CPU, bytes/s.

Starts recorder_node (auto_start) and a separate load_publisher process (3 cameras 480x640
rgb8 at 30 Hz + 4 JointState at 50 Hz by default) in a private ROS domain with the halo_ros
Fast DDS profile (shared-memory transport), lets the publisher run, stops the recorder with
SIGINT (it closes the episode), then compares what was sent with what the bag holds.

    halo-ros bench-recording --duration-s 10 --json recording.json
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument('--duration-s', type=float, default=10.0, help='publishing time')
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--cameras', type=int, default=3)
    parser.add_argument('--camera-hz', type=float, default=30.0)
    parser.add_argument('--joint-hz', type=float, default=50.0)
    parser.add_argument('--compression', choices=('none', 'zstd'), default='none')
    parser.add_argument('--out', default='', help='keep the bag here (default: a temp folder)')
    parser.add_argument('--json', default='', help='write the results here')


def _cpu_s(pid: int) -> float:
    """utime + stime of a live process, from /proc."""
    with open(f'/proc/{pid}/stat', encoding='ascii') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def run(args) -> int:
    from halo_ros import rosenv
    from halo_ros.recording.episode_meta import read_sidecar
    from halo_ros.recording.recover import mcap_file

    env = rosenv.ros_environment(rosenv.random_domain_id())
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[2]), env.get('PYTHONPATH', '')])
    )
    with tempfile.TemporaryDirectory(prefix='halo-bench-rec-') as tmp:
        out = Path(args.out or tmp) / 'episodes'
        report = Path(tmp) / 'sent.json'
        recorder = subprocess.Popen(
            [
                sys.executable,
                '-m',
                'halo_ros.nodes.recorder_node',
                '--ros-args',
                '-p',
                f'output_dir:={out}',
                '-p',
                'auto_start:=true',
                '-p',
                f'compression:={args.compression}',
            ],
            env=env,
        )
        t_start = time.monotonic()
        try:
            publisher = subprocess.run(
                [
                    sys.executable,
                    '-m',
                    'halo_ros.nodes.load_publisher',
                    '--cameras',
                    str(args.cameras),
                    '--height',
                    str(args.height),
                    '--width',
                    str(args.width),
                    '--camera-hz',
                    str(args.camera_hz),
                    '--joint-hz',
                    str(args.joint_hz),
                    '--duration-s',
                    str(args.duration_s),
                    '--report',
                    str(report),
                ],
                env=env,
                timeout=args.duration_s + 120,
            )
            if publisher.returncode != 0:
                logger.error('load_publisher failed (exit %d)', publisher.returncode)
                return 1
            time.sleep(1.0)  # let the last messages cross DDS before stopping the recorder
            recorder_cpu_s = _cpu_s(recorder.pid)
            recorder_wall_s = time.monotonic() - t_start
            recorder.send_signal(signal.SIGINT)
            recorder.wait(60)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait(10)
        sent_report = json.loads(report.read_text())
        (bag,) = [p for p in out.iterdir() if p.is_dir()]
        meta = read_sidecar(bag)
        bag_bytes = mcap_file(bag).stat().st_size
        stats = meta.writer_stats
        rows = []
        for topic, sent in sorted(sent_report['sent'].items()):
            written = meta.message_counts.get(topic, 0)
            dropped = sum(n for k, n in meta.drops.items() if k.split('|')[0] == topic)
            rows.append(
                {
                    'topic': topic,
                    'sent': sent,
                    'received': written + dropped,
                    'written': written,
                    'dropped': dropped,
                }
            )
        duration = sent_report['elapsed_s']
        result = {
            'load': {
                'cameras': args.cameras,
                'height': args.height,
                'width': args.width,
                'camera_hz': args.camera_hz,
                'joint_hz': args.joint_hz,
                'duration_s': round(duration, 2),
                'compression': args.compression,
            },
            'topics': rows,
            'sent_total': sum(r['sent'] for r in rows),
            'written_total': sum(r['written'] for r in rows),
            'dropped_total': sum(r['dropped'] for r in rows),
            'lost_total': sum(r['sent'] - r['received'] for r in rows),
            'writer_cpu_share': round(stats.get('writer_cpu_s', 0) / stats['duration_s'], 4)
            if stats.get('duration_s')
            else None,
            'recorder_process_cpu_share': round(recorder_cpu_s / recorder_wall_s, 4),
            'payload_bytes_per_s': round(stats.get('written_bytes', 0) / duration),
            'bag_bytes_per_s': round(bag_bytes / duration),
            'machine': {'cpus': os.cpu_count(), 'loadavg_1min': os.getloadavg()[0]},
        }
    print(f'{"topic":34s} {"sent":>7s} {"received":>9s} {"written":>8s} {"dropped":>8s}')
    for r in rows:
        print(
            f'{r["topic"]:34s} {r["sent"]:7d} {r["received"]:9d} {r["written"]:8d} '
            f'{r["dropped"]:8d}'
        )
    print(
        f'total sent {result["sent_total"]}, written {result["written_total"]}, dropped '
        f'{result["dropped_total"]}, lost before the recorder {result["lost_total"]}'
    )
    print(
        f'writer thread CPU {100 * (result["writer_cpu_share"] or 0):.1f} % of one core, '
        f'recorder process {100 * result["recorder_process_cpu_share"]:.1f} %, '
        f'payload {result["payload_bytes_per_s"] / 1e6:.1f} MB/s, '
        f'bag {result["bag_bytes_per_s"] / 1e6:.1f} MB/s, '
        f'load average {result["machine"]["loadavg_1min"]:.2f} on {os.cpu_count()} CPUs'
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result['dropped_total'] == 0 and result['lost_total'] == 0 else 2
