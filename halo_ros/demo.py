"""Run the embedded simulator demo: the whole ROS graph on a simulated ALOHA, no robot, no GPU.

Starts four node processes: the simulator (MuJoCo; its arms are virtual Dynamixel buses and a
scripted operator moves the leader arms), the controller (50 Hz, the real Dynamixel driver), the
policy (HALO reasoning slowly while its action expert streams chunks; by default the halo-tiny
checkpoint `halo-ros train` made from the project's own demonstrations) and the recorder. Then:

1. a teleoperated demonstration: the controller follows the leaders for one transfer-cube
   episode, recorded as a bag (how the training data was made);
2. closed-loop episodes: the scene resets (a new seed), the policy is told a new episode began,
   and once it has reasoned about it the controller hands the arms over (a ramp into its chunks)
   until the cube is transferred or the time is up; each episode is a bag marked with success;
3. after the last one the operator intervenes: the leaders are brought to the followers' pose
   and released, so nothing jumps; then the arms hold.

It prints topic rates, each episode's result, the success rate, the reasoning text and the
subtasks it went through, subgoal images, chunk latency, seam steps, and the bags under runs/
(`closed_loop.json` there holds the figures).
"""

import json
import logging
import os
import time

from halo_ros import rosenv
from halo_ros.benchmarks import table
from halo_ros.demo_report import DemoRun, rate_rows, report_lines
from halo_ros.runtime.settings import POLICY_DEFAULTS
from halo_ros.supervisor import NodeProcess, Watch, halo_ros_command

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = 'halo-tiny-transfer-cube'  # under models/, made by `halo-ros train`
CAMERA_TOPICS = ('cam_high/image_raw', 'cam_left_wrist/image_raw', 'cam_right_wrist/image_raw')
FOLLOWER_TOPICS = ('follower_left/joint_states', 'follower_right/joint_states')


def add_arguments(parser) -> None:
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--episodes', type=int, default=3, help='closed-loop policy episodes')
    parser.add_argument(
        '--episode-seconds', type=float, default=10.0, help='each policy episode at most'
    )
    parser.add_argument('--timeout', type=float, default=240.0, help='give up after this long')
    parser.add_argument('--run-dir', default=None, help='logs and bags (default runs/demo-<time>)')
    parser.add_argument(
        '--checkpoint',
        default=DEFAULT_CHECKPOINT,
        help="trained halo-tiny weights (default: the one models/ ships); 'random' for none",
    )
    parser.add_argument(
        '--backend',
        default='onnxruntime',
        choices=('torch', 'onnxruntime', 'remote'),
        help='remote: the engine runs in its own `halo-ros serve` process',
    )
    parser.add_argument('--instruction', default='transfer the cube to the other arm')
    parser.add_argument(
        '--seam',
        default='auto',
        choices=('auto', 'prefix', 'rtc', 'hard', 'none'),
        help='auto: prefix (training-time RTC) if the checkpoint was trained for it, else rtc',
    )
    parser.add_argument(
        '--chunk-rate-hz',
        type=float,
        default=POLICY_DEFAULTS['chunk_rate_hz'],
        help='chunks per (simulated) second at most (the policy node default)',
    )
    parser.add_argument(
        '--real-time-factor',
        type=float,
        default=1.0,
        help='simulated seconds per second (< 1: every node runs on the simulated /clock, so '
        'a CPU policy acts as a faster one would; 0.1 ~ ten times faster)',
    )
    parser.add_argument(
        '--camera-size',
        type=int,
        nargs=2,
        default=(160, 120),
        metavar=('W', 'H'),
        help='small keeps the CPU policy fast',
    )


def run(args) -> int:
    from halo_ros.engine.loading import resolve_checkpoint

    if not 0 < args.real_time_factor <= 1:
        print(f'--real-time-factor must be in (0, 1], got {args.real_time_factor}')
        return 2
    if not args.chunk_rate_hz > 0:
        print(f'--chunk-rate-hz must be positive, got {args.chunk_rate_hz}')
        return 2

    args.checkpoint = resolve_checkpoint(args.checkpoint)
    domain = int(os.environ.get('ROS_DOMAIN_ID') or rosenv.random_domain_id())
    rosenv.apply(domain)
    run_dir = os.path.abspath(
        args.run_dir or os.path.join('runs', time.strftime('demo-%Y%m%d-%H%M%S'))
    )
    os.makedirs(run_dir, exist_ok=True)
    print(f'halo_ros demo: ROS_DOMAIN_ID={domain}, logs and bags in {run_dir}')
    if args.backend != 'torch':
        print('(the first run exports the ONNX graphs once, about a minute on 2 cores)')
    run = _run_graph(args, run_dir)
    with open(os.path.join(run_dir, 'closed_loop.json'), 'w', encoding='utf-8') as f:
        json.dump(run.figures(), f, indent=1)
    print(table(rate_rows(run.topics)))
    for line in report_lines(run, args):
        print(line)
    episodes = os.path.join(run_dir, 'episodes')
    bags = sorted(os.listdir(episodes)) if os.path.isdir(episodes) else []
    print(f'recorded {len(bags)} episode(s): ' + ', '.join(os.path.join(episodes, b) for b in bags))
    from halo_ros.viz.summary import write_demo_summary  # a report per episode, one page of all

    print(f'summary page (success per seed, a report per episode): {write_demo_summary(run_dir)}')
    return 0 if run.ok else 1


def _run_graph(args, run_dir: str) -> DemoRun:
    """Start the nodes, drive the scenario, stop them; rclpy lives exactly as long."""
    from halo_ros.nodes.demo_driver import driving  # rclpy only after the environment is set

    processes = {}
    with driving(CAMERA_TOPICS, FOLLOWER_TOPICS, processes) as driver:
        deadline = time.monotonic() + args.timeout  # until the demonstration is over
        # The policy first: loading (and on the first run exporting) its engine takes the CPU
        # for a while, and the 50 Hz simulation and controller should not start starved.
        processes |= _start_policy_side(args, run_dir)
        driver.wait_for_publisher('halo/action_chunk', Watch(deadline, processes))
        processes |= start_robot_side(args, run_dir)
        return driver.run(args.episodes, args.episode_seconds, Watch(deadline, processes))


def sim_time(args) -> bool:
    """Below real time every node runs on the simulator's /clock."""
    return getattr(args, 'real_time_factor', 1.0) < 1.0


def node(run_dir: str, module: str, name: str, params: dict, *, use_sim_time=False):
    log_path = os.path.join(run_dir, f'{name}.log')
    if use_sim_time:
        params = {**params, 'use_sim_time': True}
    return NodeProcess(f'halo_ros.nodes.{module}', params, log_path=log_path).start()


def _start_policy_side(args, run_dir: str) -> dict:
    """Recorder, policy (and its engine server with --backend remote)."""
    width, height = args.camera_size
    recorder = {
        'output_dir': os.path.join(run_dir, 'episodes'),
        'robot': 'sim_aloha',
        'instruction': args.instruction,
    }
    slow = sim_time(args)
    processes = {
        'recorder': node(run_dir, 'recorder_node', 'recorder', recorder, use_sim_time=slow)
    }
    if args.backend == 'remote':
        processes['server'] = _serve(args, run_dir)
    policy = {
        'backend': args.backend,
        'image_width': width,
        'image_height': height,
        'seed': args.seed,
        'instruction': args.instruction,
        'seam_mode': args.seam,
        'chunk_rate_hz': float(args.chunk_rate_hz),
        'threads': 1,
    }
    if args.checkpoint:  # an empty string cannot be passed as a ROS parameter override
        policy['checkpoint'] = args.checkpoint
    processes['policy'] = node(run_dir, 'policy_node', 'policy', policy, use_sim_time=slow)
    return processes


def start_robot_side(args, run_dir: str) -> dict:
    """The simulated robot (arms behind virtual Dynamixel buses) and its controller."""
    width, height = args.camera_size
    controller = {'calibration': 'sim_aloha.yaml', 'config': _demo_controller_config(run_dir)}
    sim = {'operator': 'leaders', 'seed': args.seed, 'camera_width': width, 'camera_height': height}
    slow = sim_time(args)
    if slow:
        sim |= {'sim_time': True, 'real_time_factor': float(args.real_time_factor)}
    return {
        'controller': node(run_dir, 'controller_node', 'controller', controller, use_sim_time=slow),
        'sim': node(run_dir, 'sim_node', 'sim', sim),
    }


def _serve(args, run_dir):
    width, height = args.camera_size
    checkpoint = ['--checkpoint', args.checkpoint] if args.checkpoint else []
    return halo_ros_command(
        'serve',
        '--backend',
        'onnxruntime',
        '--image-size',
        str(width),
        str(height),
        '--seed',
        str(args.seed),
        *checkpoint,
        log_path=os.path.join(run_dir, 'serve.log'),
    ).start()


def _demo_controller_config(run_dir: str) -> str:
    """The controller's config with a watchdog that tolerates a CPU policy.

    On a GPU chunks arrive every 0.1-0.2 s; on this demo's 2-core CPU a chunk can take most of
    a second, so the watchdog and the chunk age limit are stretched (the arms still hold when
    the policy stops; see config/controller.yaml for the robot values).
    """
    import yaml

    from halo_ros.paths import config_file

    with open(config_file('controller.yaml'), encoding='utf-8') as f:
        config = yaml.safe_load(f)
    config.update(watchdog_timeout_s=1.5, max_chunk_age_s=2.5)
    path = os.path.join(run_dir, 'controller_demo.yaml')
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(config, f)
    return path
