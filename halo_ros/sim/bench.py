"""Benchmark the simulator: physics steps/s, render rates, and published camera rates over ROS.

The ROS part (`--ros`) starts the simulator node in its own process at each offered resolution and
rate, and measures what a subscriber that decodes every frame actually receives.
"""

import time

from halo_ros.benchmarks import report
from halo_ros.sim.cameras import CameraRig
from halo_ros.sim.scene import CAMERAS
from halo_ros.sim.world import AlohaSim

RESOLUTIONS = ((224, 224), (240, 320), (480, 640))
# (height, width, rate) offered by the sim node, measured through ROS.
ROS_SETTINGS = (
    (240, 320, 15.0),
    (240, 320, 30.0),
    (224, 224, 30.0),
    (480, 640, 15.0),
    (480, 640, 30.0),
)


def add_arguments(parser) -> None:
    parser.add_argument('--seconds', type=float, default=3.0, help='per measurement')
    parser.add_argument('--ros', action='store_true', help='also measure published topic rates')
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
    if args.ros:
        rows += _published_rates(args.seconds * 3)
    report('simulator', rows, args.json)
    return 0


def _published_rates(seconds: float) -> list[dict]:
    from sensor_msgs.msg import Image

    from halo_ros import rosenv
    from halo_ros.nodes.topic_monitor import watch
    from halo_ros.supervisor import NodeProcess

    rosenv.apply(rosenv.random_domain_id())
    rows = []
    for height, width, rate in ROS_SETTINGS:
        params = {'camera_width': width, 'camera_height': height, 'camera_rate_hz': rate}
        sim = NodeProcess('halo_ros.nodes.sim_node', params, log_path='/dev/null').start()
        try:
            stats = watch({f'{c}/image_raw': Image for c in CAMERAS}, seconds, settle_s=4.0)
        finally:
            sim.stop()
        received = [
            stats[f'{c}/image_raw'].rate_hz() if f'{c}/image_raw' in stats else 0.0 for c in CAMERAS
        ]
        rows.append(
            {
                'what': f'published @ {rate:g} Hz, decoded',
                'cameras': len(CAMERAS),
                'resolution': f'{height}x{width}',
                'rate_hz': min(received),
                'realtime_x': '-',
            }
        )
    return rows
