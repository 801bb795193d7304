"""Run the embedded simulator demo: the ROS graph on a simulated ALOHA, no robot and no GPU.

Starts the simulator node in its own process (the scripted expert performs one transfer-cube
episode) and the policy node (halo-tiny, random weights unless --checkpoint: it reasons and emits
chunks asynchronously; nothing executes its chunks until the controller exists), watches the
graph from this process, and prints topic rates, the episode result, the reasoning text, whether
subgoal images arrive, and the chunk rate and latency.
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
    parser.add_argument('--no-policy', action='store_true', help='simulator only')
    parser.add_argument('--checkpoint', default='', help='halo-tiny weights (default: random)')
    parser.add_argument('--instruction', default='transfer the cube to the other arm')
    parser.add_argument('--seam', default='rtc', choices=('rtc', 'hard', 'none'))
    parser.add_argument(
        '--camera-size',
        type=int,
        nargs=2,
        default=(160, 120),
        metavar=('W', 'H'),
        help='simulated camera frames (small keeps the CPU policy fast)',
    )


def run(args) -> int:
    domain = int(os.environ.get('ROS_DOMAIN_ID') or rosenv.random_domain_id())
    rosenv.apply(domain)
    run_dir = args.run_dir or os.path.join('runs', time.strftime('demo-%Y%m%d-%H%M%S'))
    os.makedirs(run_dir, exist_ok=True)

    # rclpy only after the environment is set: the DDS participant reads it at init.
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from halo_ros.nodes.topic_monitor import TopicMonitor

    print(f'halo_ros demo: ROS_DOMAIN_ID={domain}, logs in {run_dir}')
    width, height = args.camera_size
    sim_params = {
        'operator': 'followers',
        'virtual_buses': False,
        'seed': args.seed,
        'camera_width': width,
        'camera_height': height,
    }
    sim = NodeProcess(
        'halo_ros.nodes.sim_node', sim_params, log_path=os.path.join(run_dir, 'sim_node.log')
    ).start()
    episodes_dir = os.path.join(run_dir, 'episodes')
    recorder = NodeProcess(
        'halo_ros.nodes.recorder_node',
        {
            'output_dir': episodes_dir,
            'auto_start': True,
            'robot': 'sim_aloha',
            'instruction': args.instruction,
        },
        log_path=os.path.join(run_dir, 'recorder_node.log'),
    ).start()
    policy = None
    if not args.no_policy:
        # The follower joint_states come from the controller (not built yet): read the simulator's.
        policy_params = {
            'image_width': width,
            'image_height': height,
            'seed': args.seed,
            'state_topic': 'sim/joint_states',
            'instruction': args.instruction,
            'seam_mode': args.seam,
            'chunk_rate_hz': 5.0,
            'torch_threads': 1,
        }
        if args.checkpoint:  # an empty string cannot be passed as a ROS parameter override
            policy_params['checkpoint'] = args.checkpoint
        policy = NodeProcess(
            'halo_ros.nodes.policy_node',
            policy_params,
            log_path=os.path.join(run_dir, 'policy_node.log'),
        ).start()
    rclpy.init()
    topics = {t: Image for t in CAMERA_TOPICS}
    topics |= {'sim/joint_states': JointState, 'sim/status': String}
    if policy is not None:
        topics |= {
            'halo/action_chunk': JointTrajectory,
            'halo/reasoning': String,
            'halo/subgoal/image_raw': Image,
            'diagnostics': DiagnosticArray,
        }
    monitor = TopicMonitor(topics, 'demo_monitor')
    status = None
    reasonings: list[dict] = []

    def policy_shown() -> bool:  # enough to see both loops: a few cycles and many chunks
        stats = monitor.stats
        return policy is None or (
            stats['halo/reasoning'].count >= 3 and stats['halo/action_chunk'].count >= 10
        )

    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline and sim.running:
            if policy is not None and not policy.running:
                print(f'the policy node exited; see {run_dir}/policy_node.log')
                break
            rclpy.spin_once(monitor, timeout_sec=0.1)
            last = monitor.stats['sim/status'].last
            status = json.loads(last.data) if last is not None else None
            text = monitor.stats['halo/reasoning'].last if policy is not None else None
            if text is not None and (not reasonings or reasonings[-1]['raw'] != text.data):
                reasonings.append({'raw': text.data, **json.loads(text.data)})
            if status and status['operator_done'] and policy_shown():
                break
    finally:
        recorder.stop()  # first: it closes the episode's bag while the others still publish
        if policy is not None:
            policy.stop()
        sim.stop()
        monitor.destroy_node()
        rclpy.try_shutdown()

    rows = [
        {
            'topic': topic,
            'messages': s.count,
            'rate_hz': round(s.rate_hz(), 1),
            'shape': ' '.join('x'.join(map(str, shape)) for shape in s.shapes) or '-',
            'bad': s.errors,
        }
        for topic, s in sorted(monitor.stats.items())
    ]
    print(table(rows))
    if not status or not status['operator_done']:
        print(f'the episode did not finish within {args.timeout:g} s; see {run_dir}/sim_node.log')
        return 1
    verdict = 'SUCCESS' if status['success'] else 'failure'
    print(
        f'episode {status["episode"]} (seed {status["seed"]}): {verdict}, reward '
        f'{status["reward"]}/{status["max_reward"]} after {status["tick"]} ticks'
    )
    if policy is not None:
        _print_policy(monitor.stats, reasonings, args)
    bags = sorted(p for p in os.listdir(episodes_dir)) if os.path.isdir(episodes_dir) else []
    print(f'\nrecorded: {", ".join(os.path.join(episodes_dir, b) for b in bags) or "nothing"}')
    return 0


def _print_policy(stats, reasonings: list[dict], args) -> None:
    weights = args.checkpoint or 'RANDOM weights: the text, subgoal images and actions are noise'
    print(
        f'\npolicy: halo-tiny on the CPU ({weights}); seam {args.seam}; '
        f'instruction {args.instruction!r}'
    )
    for r in reasonings[-3:]:
        text = r['text'] if len(r['text']) <= 160 else r['text'][:157] + '...'
        print(
            f'  reasoning v{r["context_version"]} ({r["latency_ms"]:.0f} ms, '
            f'{"used" if r["accepted"] else "superseded"}): {text!r}'
        )
    subgoals = stats['halo/subgoal/image_raw']
    shapes = ', '.join('x'.join(map(str, s)) for s in subgoals.shapes) or '-'
    print(f'  subgoal images: {subgoals.count} arrived ({shapes})')
    chunks = stats['halo/action_chunk']
    print(
        f'  action chunks: {chunks.count} at {chunks.rate_hz():.1f} Hz'
        + (f', last {chunks.last.header.frame_id}' if chunks.last is not None else '')
    )
    if stats['diagnostics'].last is not None:
        values = {kv.key: kv.value for kv in stats['diagnostics'].last.status[0].values}
        latency = {k: values.get(f'latency_stamp_to_publish_{k}_ms', '-') for k in ('p50', 'p99')}
        flow = values.get('latency_flow_p50_ms', '-')
        drops = {k[6:]: v for k, v in values.items() if k.startswith('drops_')}
        print(
            f'  chunk latency (observation stamp -> published): p50 {latency["p50"]} ms, '
            f'p99 {latency["p99"]} ms (flow p50 {flow} ms); delay estimate '
            f'{values.get("delay_steps", "-")} steps; reasoning age '
            f'{values.get("reasoning_age_s", "-")} s; drops {drops or "none"}'
        )
