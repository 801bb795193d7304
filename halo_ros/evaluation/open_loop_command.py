"""Open-loop check on annotated demonstrations: chunk error against the camera-blind baseline.

At chosen times of each episode (default 0, 0.8, 1.6, 3.2 s) the policy's engine reasons on the
recorded frames and samples a chunk from the demonstrated action of that tick; the table gives
its error against the demonstrated chunk beside the error of the mean demonstrated chunk (what a
policy blind to the cube's position does) and how much of the demonstrations' spread across
episodes the chunks reproduce. "explained" near 0 at 0 s: the policy reaches for the average cube
position. Training episodes show the fit, annotated held-out ones generalisation. JSON beside it.

    halo-ros eval-open-loop /work/data/emcot --episodes 20
    halo-ros eval-open-loop held_out/ --checkpoint runs/train-D --times 0 0.4 0.8
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    from halo_ros.evaluation.command import add_policy_arguments
    from halo_ros.evaluation.open_loop import SUBGOALS

    parser.add_argument('data', nargs='+', help='annotated episode folders, or folders of them')
    parser.add_argument('--episodes', type=int, default=20, help='the first N episodes at most')
    parser.add_argument(
        '--times', type=float, nargs='+', default=[0.0, 0.8, 1.6, 3.2], help='seconds into each'
    )
    add_policy_arguments(parser)
    parser.add_argument(
        '--subgoal',
        default='own',
        choices=SUBGOALS,
        help="what the chunk conditions on: the model's imagined subgoal (as the node), the "
        "demonstration's goal image (as training), or none (same as --no-subgoal)",
    )
    parser.add_argument('--seed', type=int, default=0, help='flow noise')
    parser.add_argument('--out', default=None, help='JSON file (default: none)')


def run(args) -> int:
    from halo_ros.evaluation.command import policy_settings_from
    from halo_ros.evaluation.open_loop import (
        fit_lines,
        grounding_fit,
        grounding_lines,
        open_loop_fit,
        sample_chunks,
    )
    from halo_ros.runtime.settings import load_policy_engine
    from halo_ros.training.data import DatasetError, episode_folders, load_episode

    if args.episodes < 1:
        log.error('--episodes must be at least 1, got %d', args.episodes)
        return 2
    if any(t < 0 for t in args.times):
        log.error('--times must not be negative, got %s', args.times)
        return 2
    try:
        settings = policy_settings_from(args)
        cameras = settings.engine.cameras
        folders = episode_folders(args.data)[: args.episodes]
        episodes = [load_episode(f, cameras, cameras[0]) for f in folders]
    except (FileNotFoundError, ValueError, DatasetError) as error:
        log.error('%s', error)
        return 2
    fps = episodes[0].fps
    ticks = sorted({round(t * fps) for t in args.times})
    engine = load_policy_engine(settings)
    said: dict[int, list[tuple[str, str]]] = {t: [] for t in ticks}

    def on_reasoning(episode, tick, reasoning):
        if episode.grounding[tick]:
            said[tick].append((episode.grounding[tick], reasoning.object))

    try:
        subgoal = 'none' if args.no_subgoal else args.subgoal
        chunks, demos = sample_chunks(
            engine, settings, episodes, ticks, args.seed, subgoal, on_reasoning
        )
    except ValueError as error:
        log.error('%s', error)
        return 2
    finally:
        engine.close()
    if not chunks:
        log.error('every episode is shorter than the first of --times %s', args.times)
        return 2
    fits = open_loop_fit(chunks, demos)
    v = settings.values
    print(
        f'halo-ros eval-open-loop: {len(episodes)} episodes, {v["checkpoint"] or "random weights"}'
        f' on {v["backend"]}, seam {v["seam_mode"]}, subgoal {subgoal} (errors in rad, mean '
        'over the chunk and the six joints of an arm; spread: std across episodes of the chunk '
        'end; end corr: its correlation with the demonstrated end)'
    )
    for line in fit_lines(fits, fps):
        print(line)
    grounding = grounding_fit(said)
    if grounding:
        print('where the reasoning says the object is, against the annotation:')
        for line in grounding_lines(grounding, fps):
            print(line)
    if args.out:
        from halo_ros.benchmarks import machine

        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        document = {
            'policy': {k: v[k] for k in sorted(v) if 'key' not in k},
            'episodes': [str(f) for f in folders],
            'machine': machine(),
            'subgoal': subgoal,
            'fits': [f.to_dict() for f in fits],
            'grounding': [g.to_dict() for g in grounding],
        }
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(document, f, indent=1)
        print(f'wrote {args.out}')
    return 0
