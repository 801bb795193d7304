"""Record teleoperated demonstrations on the simulator: N seeded episodes as rosbag2 episodes.

The data a user makes: the scripted operator moves the leader arms, the controller follows them
in TELEOP through the virtual Dynamixel buses, and the recorder writes one bag per episode,
marked with the simulator's success. `--annotate DIR` then turns the successful ones into HALO's
EM-CoT training data (`halo-ros annotate`), ready for `halo-ros train`.

Episode k uses seed `--seed + k + 1` (the simulator counts on from its start seed), so a
collection is reproducible and a closed-loop evaluation can use seeds it never saw.
"""

import json
import os

from halo_ros import rosenv
from halo_ros.demo import CAMERA_TOPICS, FOLLOWER_TOPICS, node, start_robot_side
from halo_ros.demo_report import teleop_outcome
from halo_ros.supervisor import Watch

DEFAULT_INSTRUCTION = 'transfer the cube to the other arm'
_ERRORS_IN_A_ROW = 3  # a node refusing this often in a row is not a passing hiccup: stop


def add_arguments(parser) -> None:
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0, help='episode k has seed seed + k + 1')
    parser.add_argument('--out', required=True, help='bags go to OUT/episodes')
    parser.add_argument('--instruction', default=DEFAULT_INSTRUCTION)
    parser.add_argument('--camera-size', type=int, nargs=2, default=(160, 120), metavar=('W', 'H'))
    parser.add_argument(
        '--annotate', default='', metavar='DIR', help='write EM-CoT data of the successes here'
    )
    parser.add_argument('--timeout-per-episode', type=float, default=60.0)


def run(args) -> int:
    domain = int(os.environ.get('ROS_DOMAIN_ID') or rosenv.random_domain_id())
    rosenv.apply(domain)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    print(f'halo_ros collect: {args.episodes} episodes, ROS_DOMAIN_ID={domain}, into {out}')
    results = _collect(args, out)
    successes = sum(r['success'] for r in results)
    print(f'{successes}/{len(results)} demonstrations succeeded')
    with open(os.path.join(out, 'collect.json'), 'w', encoding='utf-8') as f:
        json.dump({'instruction': args.instruction, 'episodes': results}, f, indent=1)
    if args.annotate:
        return _annotate(os.path.join(out, 'episodes'), args.annotate)
    return 0 if results else 1


def _collect(args, out: str) -> list[dict]:
    """Start the robot side and the recorder, drive the demonstrations, stop them; rclpy lives
    exactly as long. Returns the simulator's status at the end of each episode."""
    # rclpy only after the environment is set
    from halo_ros.nodes.demo_driver import DemoError, driving

    recorder = {
        'output_dir': os.path.join(out, 'episodes'),
        'robot': 'sim_aloha',
        'instruction': args.instruction,
    }
    processes, results, errors = {}, [], 0
    with driving(CAMERA_TOPICS, FOLLOWER_TOPICS, processes) as driver:
        processes['recorder'] = node(out, 'recorder_node', 'recorder', recorder)
        processes |= start_robot_side(args, out)
        driver.wait_ready(Watch.for_seconds(120, processes))
        for k in range(args.episodes):
            watch = Watch.for_seconds(args.timeout_per_episode, processes)
            try:
                status = driver.teleop_episode(watch)
            except DemoError as error:
                # One refused request (a bus that did not answer in time) loses this episode
                # only: its bag is already marked or is left unmarked, never counted a success.
                errors += 1
                stop = errors >= _ERRORS_IN_A_ROW
                print(
                    f'episode {k + 1}/{args.episodes}: {error}; '
                    + ('stopping' if stop else 'going on'),
                    flush=True,
                )
                if stop:
                    break
                continue
            errors = 0
            results.append(status)
            print(
                f'episode {k + 1}/{args.episodes} (seed {status["seed"]}): '
                + teleop_outcome(status),
                flush=True,
            )
    return results


def _annotate(episodes: str, out: str) -> int:
    """The successful bags -> EM-CoT folders (a failed demonstration teaches the wrong thing),
    grounded: the simulator's object is the red cube."""
    import argparse

    from halo_ros.recording import annotate

    print(f'annotating the successful episodes into {out}')
    parser = argparse.ArgumentParser()
    annotate.add_arguments(parser)
    return annotate.run(
        parser.parse_args(
            [episodes, '--out', out, '--only-success', '--no-progress', '--grounding', 'red-cube']
        )
    )
