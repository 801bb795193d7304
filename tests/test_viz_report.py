"""halo-ros report: a recorded episode as one self-contained HTML page; bad episodes refused."""

import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from halo_ros.recording import synthetic
from halo_ros.recording import synthetic_policy as sp
from halo_ros.viz.episode import EpisodeError, load_episode
from halo_ros.viz.report import REPORT_NAME, write_report
from tests.viz_helpers import chromium_available, screenshot, sections

SECTIONS = ('overview', 'timeline', 'joints', 'imagined', 'outcome', 'faults', 'cameras')
TOTAL_S = synthetic.duration_s() + 0.3  # the synthetic episode's length with its default tail


@pytest.fixture(scope='module')
def episode(tmp_path_factory) -> Path:
    """A closed-loop episode recorded by the real episode writer (policy side included)."""
    bag = tmp_path_factory.mktemp('report') / 'episode_0001'
    synthetic.write_pick_place_episode(bag, policy=True, image_hw=(96, 128))
    return bag


@pytest.fixture(scope='module')
def report(episode) -> Path:
    return write_report(episode)


def test_report_has_every_section_with_the_right_number_of_chunks_and_cycles(report):
    html = report.read_text()
    found = sections(html)
    assert tuple(found) == SECTIONS
    chunks = sp.chunk_observations_s(TOTAL_S)
    # A chunk takes over on the first tick after it arrives, while the policy has the arms.
    switches = [
        k for k, t in enumerate(chunks) if t + sp.chunk_latency_ms(k) / 1e3 < synthetic.duration_s()
    ]
    cycles = sp.reasoning_observations_s(TOTAL_S)
    assert found['timeline'] == {
        'chunks': str(len(chunks)),
        'chunk-switches': str(len(switches)),
        'reasoning-cycles': str(len(cycles)),
    }
    assert found['joints'] == {'chunk-switches': str(len(switches))}
    assert found['imagined'] == {'subgoals': str(len(cycles))}
    assert html.count('<tr class="reasoning-cycle">') == len(cycles)
    assert html.count('<tr class="chunk">') == len(chunks)
    for name in ('reach', 'grasp', 'transfer', 'release'):  # the subtask text, where it changed
        assert f'<td>{name}</td>' in html
    assert 'Interventions (1)' in html  # the operator took over after the task


def test_report_counts_faults_by_reason_during_the_episode(report):
    html = report.read_text()
    rows = re.findall(r'<tr class="fault">(.*?)</tr>', html)
    cells = [re.findall(r'<td[^>]*>(.*?)</td>', row) for row in rows]
    by_reason = {c[1]: (c[2], c[3]) for c in cells}
    # The policy's drops_stale total rises by one a second from 3; missed_ticks from 5 to 7.
    assert by_reason['drops_stale'] == (str(int(TOTAL_S) - 1), str(int(TOTAL_S) + 2))
    assert by_reason['missed_ticks'] == ('2', '7')
    assert 'faults this second: missed_ticks' in html


def test_report_is_self_contained_and_light(report):
    html = report.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html), 'nothing may load from a network'
    assert '<script' not in html and '<link' not in html
    images = re.findall(r'src="data:image/(png|jpeg);base64,', html)
    # timeline + joints, 3 per subgoal (seen, imagined, happened), 8 per camera in the strip
    assert len(images) == 2 + 3 * len(sp.reasoning_observations_s(TOTAL_S)) + 3 * 8
    assert report.stat().st_size < 3e6


def test_subgoal_is_set_beside_the_frame_when_its_subtask_ended(episode):
    ep = load_episode(episode)
    goals = [round(c.goal_s, 3) for c in ep.reasoning]
    observed = [round(c.observation_s, 3) for c in ep.reasoning]
    # Each cycle's subtask differs from the next one's: its goal is the next observation; the
    # last one's subtask never ended before the episode did.
    assert goals[:-1] == observed[1:]
    assert goals[-1] == pytest.approx(ep.duration_s, abs=0.05)
    assert all(
        c.subgoal is not None and c.subgoal.shape == (*sp.SUBGOAL_HW, 3) for c in ep.reasoning
    )
    # Measured follows commanded exactly in the synthetic episode (same trajectory, jittered
    # stamps): the following error is only interpolation.
    assert np.nanmax(np.abs(ep.command - ep.measured)) < 0.05


@pytest.mark.skipif(
    not chromium_available(), reason='chromium not installed (`make test` installs it with apt)'
)
def test_report_renders_in_headless_chromium(report, tmp_path):
    png = tmp_path / 'report.png'
    result = screenshot(report.as_uri(), png)
    assert result.returncode == 0 and png.is_file(), result.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert('RGB'))
    assert pixels.shape[:2] == (2400, 1280)
    ink = (pixels < 200).any(axis=2)  # anything darker than a light grey
    assert ink.mean() > 0.03, f'the page looks blank ({ink.mean():.1%} ink)'
    # The plots drew colour (command blue, mode green), not only black text.
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    assert ((b - r > 60) & (b - g > 30)).sum() > 500
    assert ((g - r > 60) & (g - b > 60)).sum() > 500


def _damage_structure(bag: Path) -> None:
    mcap = next(bag.glob('*.mcap'))
    with open(mcap, 'r+b') as f:
        f.seek(3000)  # inside the first chunk's records
        f.write(b'\xff' * 64)


def _cut(bag: Path) -> None:
    mcap = next(bag.glob('*.mcap'))
    os.truncate(mcap, mcap.stat().st_size // 2)


def _empty_bag(bag: Path) -> None:
    from halo_ros.recording.episode_meta import EpisodeMeta
    from halo_ros.recording.episode_writer import EpisodeWriter

    shutil.rmtree(bag)
    writer = EpisodeWriter(bag, EpisodeMeta(bag.name))
    writer.start()
    writer.stop()


def _bad_control_state(bag: Path) -> None:
    from halo_ros.recording.episode_meta import EpisodeMeta
    from halo_ros.recording.episode_writer import EpisodeWriter
    from halo_ros.recording.topics import CONTROL_STATE_TOPIC
    from tests.recording_helpers import string_cdr

    shutil.rmtree(bag)
    sent = [m for m in synthetic.pick_place_messages() if m[0] != CONTROL_STATE_TOPIC]
    clock = iter(range(sent[0][2] - 1000, sent[0][2] + 10**12, 1000))
    writer = EpisodeWriter(bag, EpisodeMeta(bag.name), clock_ns=lambda: next(clock))
    writer.start()
    for topic, msgtype, recv_ns, _, data in sent:
        writer.put(topic, msgtype, recv_ns, data)
    writer.put(CONTROL_STATE_TOPIC, 'std_msgs/msg/String', sent[-1][2] + 1, string_cdr('{tick'))
    writer.stop()


@pytest.mark.parametrize(
    'damage, says',
    [
        (lambda bag: shutil.rmtree(bag), 'no such episode folder'),
        (lambda bag: [p.unlink() for p in bag.glob('*.mcap')], 'not an episode bag'),
        (_cut, 'unfinished bag'),
        (lambda bag: (bag / 'metadata.yaml').unlink(), 'unfinished bag'),
        (_damage_structure, 'the bag cannot be read'),
        (_empty_bag, 'empty episode'),
        (_bad_control_state, 'halo/control_state message'),
    ],
    ids=['missing', 'no-mcap', 'cut', 'no-metadata', 'garbled', 'empty', 'bad-json'],
)
def test_a_damaged_or_empty_episode_is_refused_and_nothing_is_written(
    episode, tmp_path, damage, says
):
    bag = tmp_path / 'episode_0002'
    shutil.copytree(episode, bag, ignore=shutil.ignore_patterns(REPORT_NAME))
    out = tmp_path / 'out' / 'report.html'
    out.parent.mkdir()
    out.write_text('the previous report')
    damage(bag)
    with pytest.raises(EpisodeError, match=says) as error:
        write_report(bag, out)
    assert str(bag) in str(error.value)
    assert out.read_text() == 'the previous report'
    assert sorted(p.name for p in out.parent.iterdir()) == ['report.html'], 'no temporary left'
    if bag.is_dir():
        assert not (bag / REPORT_NAME).exists()


def test_the_command_prints_the_path_or_the_reason(episode, tmp_path):
    import subprocess

    out = tmp_path / 'r.html'
    ok = subprocess.run(
        [sys.executable, '-m', 'halo_ros.cli', 'report', str(episode), '--out', str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and ok.stdout.strip() == str(out), ok.stderr[-2000:]
    missing = tmp_path / 'nope'
    bad = subprocess.run(
        [sys.executable, '-m', 'halo_ros.cli', 'report', str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and f'{missing}: no such episode folder' in bad.stderr
