"""Annotate recorded episodes for HALO's EM-CoT training: subtasks, reasoning, goal images.

Segments each episode from the follower arms' proprioception (arm moving or still, gripper
opening or closing), writes plan/subtask/movement text from an annotator ('template' by default,
or 'package.module:Class' implementing halo_ros.recording.emcot.ReasoningAnnotator, e.g. a VLM),
saves the last frame of each subtask as its visual goal, and lays the result out as HALO's data
loader reads it (format described in halo_ros.recording.emcot). `--grounding` adds where the
object is at every tick (`halo_ros.recording.grounding`: 'red-cube' for the simulator's cube, or
'package.module:Class', a detector for real scenes).

    halo-ros annotate episodes/ --out emcot/cups
    halo-ros annotate episodes/ --out emcot/cube --grounding red-cube
"""

import logging
from pathlib import Path

from halo_ros.recording.resample import CONTROL_HZ

logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    from halo_ros.recording.primitives import PrimitiveThresholds

    d = PrimitiveThresholds()
    parser.add_argument('episodes', nargs='+', help='episode bag folders, or folders of them')
    parser.add_argument('--out', required=True, help='output folder (one sub-folder per episode)')
    parser.add_argument('--fps', type=float, default=CONTROL_HZ, help='control rate of the grid')
    parser.add_argument(
        '--annotator',
        default='template',
        help="'template' or 'package.module:Class' (a ReasoningAnnotator)",
    )
    parser.add_argument(
        '--grounding',
        default='none',
        help="where the object is, per tick: 'none', 'red-cube' or 'package.module:Class' "
        '(a halo_ros.recording.grounding.Grounder)',
    )
    parser.add_argument(
        '--grounding-camera', default='cam_high', help='the camera the object is located in'
    )
    parser.add_argument(
        '--arm-speed-rad-s',
        type=float,
        default=d.arm_speed_rad_s,
        help='joint-space speed above which an arm is moving',
    )
    parser.add_argument(
        '--gripper-speed-per-s',
        type=float,
        default=d.gripper_speed_per_s,
        help='normalised gripper speed above which it is opening/closing',
    )
    parser.add_argument(
        '--min-phase-s',
        type=float,
        default=d.min_phase_s,
        help='shorter phases merge into the previous one',
    )
    parser.add_argument('--jpeg-quality', type=int, default=90, help='frames and goal images')
    parser.add_argument(
        '--recover',
        action='store_true',
        help='salvage bags a killed recorder left unfinished first',
    )
    parser.add_argument(
        '--only-success', action='store_true', help='skip episodes not marked successful'
    )
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


def run(args) -> int:
    from tqdm import tqdm

    from halo_ros.recording.emcot import annotate_episode, load_annotator, write_emcot_episode
    from halo_ros.recording.export_dataset import find_episodes, load_episodes
    from halo_ros.recording.grounding import load_grounder
    from halo_ros.recording.primitives import PrimitiveThresholds

    thresholds = PrimitiveThresholds(
        arm_speed_rad_s=args.arm_speed_rad_s,
        gripper_speed_per_s=args.gripper_speed_per_s,
        min_phase_s=args.min_phase_s,
    )
    annotator = load_annotator(args.annotator)
    grounder = load_grounder(args.grounding)
    bags = find_episodes(args.episodes)
    progress = not args.no_progress
    out = Path(args.out)
    written = 0
    for data, aligned in tqdm(
        load_episodes(bags, fps=args.fps, recover=args.recover, only_success=args.only_success),
        total=len(bags),
        desc='annotate',
        disable=not progress,
    ):
        annotation = annotate_episode(
            data,
            aligned,
            annotator,
            thresholds,
            grounder=grounder,
            grounding_camera=args.grounding_camera,
        )
        folder = write_emcot_episode(
            out,
            written,
            data,
            aligned,
            annotation,
            annotator_name=annotator.name,
            thresholds=thresholds,
            jpeg_quality=args.jpeg_quality,
        )
        logger.info('%s: %d subtasks -> %s', data.meta.episode_id, len(annotation.subtasks), folder)
        written += 1
    if not written:
        logger.error('no episode could be annotated from %s', args.episodes)
        return 1
    return 0
