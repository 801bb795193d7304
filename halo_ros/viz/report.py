"""Write an episode's report: one self-contained HTML file a person can look at.

    halo-ros report runs/demo-<time>/episodes/episode_0001_<time>     # -> <episode>/report.html
    halo-ros report EPISODE_DIR --out /tmp/report.html

Per joint commanded vs measured with the chunk switches and the following error; chunk latency
and planned delay per chunk and the reasoning cycles (with their subtasks) on one time axis; each
subgoal image beside the top camera at the moment it was meant for ("imagined vs happened");
reward stages and success; controller modes and interventions; drops and faults by reason; a strip
of the three cameras. Images and plots are inline: the file opens without a network. A damaged,
unfinished or empty episode is refused with the reason and nothing is written.
"""

import logging
import time
from pathlib import Path

from halo_ros.viz import html as H
from halo_ros.viz import sections as S
from halo_ros.viz.episode import Episode, EpisodeError, load_episode

log = logging.getLogger(__name__)

REPORT_NAME = 'report.html'


def add_arguments(parser) -> None:
    parser.add_argument('episode', help='an episode folder (the bag: metadata.yaml + .mcap)')
    parser.add_argument(
        '--out', default=None, help=f'the HTML file (default EPISODE/{REPORT_NAME})'
    )


def run(args) -> int:
    try:
        path = write_report(Path(args.episode), Path(args.out) if args.out else None)
    except (EpisodeError, OSError) as error:
        log.error('no report written: %s', error)
        return 2
    print(path)
    return 0


def write_report(bag_dir: Path, out: Path | None = None) -> Path:
    """Load, draw, then write in one rename; EpisodeError before anything is written."""
    started = time.perf_counter()
    episode = load_episode(bag_dir)
    text = render(episode)
    path = H.write_atomic(out or Path(bag_dir) / REPORT_NAME, text)
    log.info(
        '%s: %.1f MB in %.1f s', path, path.stat().st_size / 1e6, time.perf_counter() - started
    )
    return path


def render(ep: Episode) -> str:
    counts = {
        'chunks': len(ep.chunks),
        'chunk_switches': len(ep.switches_s),
        'reasoning_cycles': len(ep.reasoning),
    }
    parts = [
        ('overview', 'Overview', S.overview(ep), {}),
        ('timeline', 'Chunks and reasoning', S.timeline(ep), counts),
        (
            'joints',
            'Commanded vs measured',
            S.joints(ep),
            {'chunk_switches': counts['chunk_switches']},
        ),
        ('imagined', 'Imagined vs happened', *S.imagined(ep)),
        ('outcome', 'Reward, modes, interventions', S.outcome(ep), {}),
        ('faults', 'Drops and faults', S.faults(ep), {}),
        ('cameras', 'Cameras', S.cameras(ep), {}),
    ]
    sections = [(i, t, H.section(i, t, body, **data)) for i, t, body, data in parts]
    verdict = {True: ('ok', 'success'), False: ('bad', 'failure'), None: ('muted', 'unknown')}
    cls, word = verdict[ep.success]
    intro = (
        f'<p><span class="{cls}">{word}</span> &middot; {ep.duration_s:.1f} s &middot; '
        f'{H.esc(ep.meta.instruction or "(no instruction)")} &middot; '
        f'<span class="muted">{H.esc(ep.bag_dir)}</span></p>'
    )
    return H.page(f'{ep.meta.episode_id}: halo_ros episode', ep.meta.episode_id, sections, intro)
