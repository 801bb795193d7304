"""Run the embedded simulator demo: the ROS graph on a simulated ALOHA, no robot and no GPU.

Starts the simulator node in its own process (the scripted expert performs one transfer-cube
episode), watches the graph from this process, and prints camera and joint rates and the
episode result.
"""

import json
import logging
import os
import time

from halo_ros import rosenv
from halo_ros.benchmarks import table
from halo_ros.supervisor import NodeProcess

log = logging.getLogger(__name__)

CAMERA_TOPICS = ('cam_high/image_raw', 'cam_left_wrist/image_raw', 'cam_right_wrist/image_raw')


def add_arguments(parser) -> None:
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--timeout', type=float, default=90.0, help='seconds before giving up')
    parser.add_argument('--run-dir', default=None, help='logs go here (default runs/demo-<time>)')


def run(args) -> int:
    domain = int(os.environ.get('ROS_DOMAIN_ID') or rosenv.random_domain_id())
    rosenv.apply(domain)
    run_dir = args.run_dir or os.path.join('runs', time.strftime('demo-%Y%m%d-%H%M%S'))
    os.makedirs(run_dir, exist_ok=True)

    # rclpy only after the environment is set: the DDS participant reads it at init.
    import rclpy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from halo_ros.nodes.topic_monitor import TopicMonitor

    print(f'halo_ros demo: ROS_DOMAIN_ID={domain}, logs in {run_dir}')
    sim = NodeProcess('halo_ros.nodes.sim_node', {'operator': 'followers', 'seed': args.seed},
                      log_path=os.path.join(run_dir, 'sim_node.log')).start()
    rclpy.init()
    topics = {t: Image for t in CAMERA_TOPICS}
    topics |= {'sim/joint_states': JointState, 'sim/status': String}
    monitor = TopicMonitor(topics, 'demo_monitor')
    status = None
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline and sim.running:
            rclpy.spin_once(monitor, timeout_sec=0.1)
            last = monitor.stats['sim/status'].last
            status = json.loads(last.data) if last is not None else None
            if status and status['operator_done']:
                break
    finally:
        sim.stop()
        monitor.destroy_node()
        rclpy.try_shutdown()

    rows = [{'topic': topic, 'messages': s.count, 'rate_hz': round(s.rate_hz(), 1),
             'shape': ' '.join('x'.join(map(str, shape)) for shape in s.shapes) or '-',
             'bad': s.errors} for topic, s in sorted(monitor.stats.items())]
    print(table(rows))
    if not status or not status['operator_done']:
        print(f'the episode did not finish within {args.timeout:g} s; see {run_dir}/sim_node.log')
        return 1
    verdict = 'SUCCESS' if status['success'] else 'failure'
    print(f'episode {status["episode"]} (seed {status["seed"]}): {verdict}, reward '
          f'{status["reward"]}/{status["max_reward"]} after {status["tick"]} ticks')
    return 0
