"""Run the scripted transfer-cube expert on the followers directly and report its success rate.

This drives the simulated followers through their SimulatedArm seam without ROS or a controller,
to measure the expert itself (the demonstration source must succeed, or the data it makes is bad).
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from halo_ros.joints import BIMANUAL_JOINTS
from halo_ros.sim import servo_model
from halo_ros.sim.arm_io import SHAFT_NAMES
from halo_ros.sim.expert import EPISODE_TICKS, TransferCubeExpert
from halo_ros.sim.world import AlohaSim, normalized_to_shaft

log = logging.getLogger(__name__)

FOREARM_ROLLS = [i for i, name in enumerate(BIMANUAL_JOINTS) if name.endswith('forearm_roll')]


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    success: bool
    max_reward: int
    final_reward: int
    wall_s: float
    # Largest travel (max - min) of either forearm roll command: a demonstration that spins the
    # wrist through half a turn shows ~pi here.
    forearm_roll_span_rad: float
    # Fastest follower shaft over one tick as a share of its servo's no-load speed (<= 1: no
    # faster than the hardware can turn), and which shaft it was.
    max_speed_share: float = 0.0
    fastest_shaft: str = ''


def command_to_shafts(command14: np.ndarray, gripper=normalized_to_shaft):
    """Split a 14-vector command into the two arms' shaft goals (gripper 0..1 -> motor angle;
    `gripper` maps it for followers by default, `normalized_to_leader_shaft` for leaders)."""
    left, right = command14[:7].copy(), command14[7:].copy()
    left[6], right[6] = gripper(left[6]), gripper(right[6])
    return left, right


def run_episode(
    sim: AlohaSim,
    expert: TransferCubeExpert,
    seed: int,
    on_tick: Callable[[int], None] | None = None,
) -> EpisodeResult:
    start = time.perf_counter()
    sim.reset(seed)
    expert.reset(sim.object_position())
    rewards, rolls = [], []
    speed = _SpeedWatch(sim)
    for tick in range(EPISODE_TICKS):
        command = expert.command(tick, sim.object_position())
        rolls.append(command[FOREARM_ROLLS])
        left, right = command_to_shafts(command)
        sim.followers['follower_left'].set_goal(left)
        sim.followers['follower_right'].set_goal(right)
        sim.step()
        speed.tick()
        rewards.append(sim.reward())
        if on_tick is not None:
            on_tick(tick)
    rolls = np.array(rolls)
    return EpisodeResult(
        seed,
        rewards[-1] == sim.max_reward,
        max(rewards),
        rewards[-1],
        time.perf_counter() - start,
        round(float((rolls.max(0) - rolls.min(0)).max()), 4),
        round(speed.share, 3),
        speed.shaft,
    )


class _SpeedWatch:
    """The fastest follower shaft per tick (position change / period), against its servo."""

    def __init__(self, sim: AlohaSim):
        self._sim, self._last, self.share, self.shaft = sim, None, 0.0, ''

    def tick(self) -> None:
        shafts = np.array([arm.read().position_rad for arm in self._sim.followers.values()])
        if self._last is not None:
            speed = np.abs(shafts - self._last) / self._sim.control_period_s
            share = speed / servo_model.NO_LOAD_RAD_S  # (2, 7)
            arm, shaft = np.unravel_index(np.argmax(share), share.shape)
            if share[arm, shaft] > self.share:
                self.share = float(share[arm, shaft])
                self.shaft = f'{list(self._sim.followers)[arm]}/{SHAFT_NAMES[shaft]}'
        self._last = shafts


def add_arguments(parser) -> None:
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--first-seed', type=int, default=0)
    parser.add_argument('--json', help='write the results here')


def run(args) -> int:
    sim = AlohaSim()
    expert = TransferCubeExpert(sim)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.episodes):
        result = run_episode(sim, expert, seed)
        results.append(result)
        log.info(
            'seed %d: %s (max reward %d, final %d, forearm roll travel %.2f rad, fastest shaft '
            '%.0f %% of no-load speed, %.1f s)',
            seed,
            'success' if result.success else 'FAIL',
            result.max_reward,
            result.final_reward,
            result.forearm_roll_span_rad,
            100 * result.max_speed_share,
            result.wall_s,
        )
    rate = float(np.mean([r.success for r in results]))
    fastest = max(results, key=lambda r: r.max_speed_share)
    print(
        f'scripted transfer-cube expert: {sum(r.success for r in results)}/{len(results)} '
        f'successful ({100 * rate:.0f} %); largest forearm roll travel in an episode '
        f'{max(r.forearm_roll_span_rad for r in results):.2f} rad; fastest follower shaft '
        f'{100 * fastest.max_speed_share:.0f} % of its no-load speed ({fastest.fastest_shaft})'
    )
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(
                {'success_rate': rate, 'episodes': [r.__dict__ for r in results]}, f, indent=1
            )
    return 0
