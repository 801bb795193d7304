"""Benchmark the simulator: physics steps/s and render rates per camera count and resolution."""

import time

from halo_ros.benchmarks import report
from halo_ros.sim.cameras import CameraRig
from halo_ros.sim.scene import CAMERAS
from halo_ros.sim.world import AlohaSim

RESOLUTIONS = ((224, 224), (240, 320), (480, 640))


def add_arguments(parser) -> None:
    parser.add_argument('--seconds', type=float, default=3.0, help='per measurement')
    parser.add_argument('--json', help='write results here')


def _rate(fn, seconds: float) -> float:
    fn()  # warm-up (first render compiles shaders, uploads meshes)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def run(args) -> int:
    sim = AlohaSim()
    rows = []
    control_rate = _rate(sim.step, args.seconds)
    rows.append(
        {
            'what': 'physics, 1 control period (10 x 2 ms substeps)',
            'cameras': '-',
            'resolution': '-',
            'rate_hz': control_rate,
            'realtime_x': control_rate * sim.control_period_s,
        }
    )
    qpos = sim.snapshot()
    for height, width in RESOLUTIONS:
        for cameras in (('cam_high',), tuple(CAMERAS)):
            rig = CameraRig(sim.model, cameras, width=width, height=height)
            rate = _rate(lambda rig=rig: rig.render(qpos), args.seconds)
            rig.close()
            rows.append(
                {
                    'what': 'render',
                    'cameras': len(cameras),
                    'resolution': f'{height}x{width}',
                    'rate_hz': rate,
                    'realtime_x': '-',
                }
            )
    report('simulator', rows, args.json)
    return 0
