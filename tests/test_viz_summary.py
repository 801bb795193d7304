"""Run summaries: the demo's page links a report per episode bag, eval's links contact sheets."""

import json
import os
import re
from pathlib import Path

import pytest

from halo_ros.recording import synthetic
from halo_ros.viz.summary import write_demo_summary, write_eval_summary


def _rows(html: str) -> list[list[str]]:
    rows = re.findall(r'<tr class="episode">(.*?)</tr>', html)
    return [re.findall(r'<td>(.*?)</td>', row) for row in rows]


def test_demo_summary_links_a_report_per_bag_and_names_a_broken_one(tmp_path):
    run = tmp_path / 'demo'
    episodes = run / 'episodes'
    synthetic.write_pick_place_episode(episodes / 'episode_0000', success=True)  # the teleop
    synthetic.write_pick_place_episode(episodes / 'episode_0001', success=False, policy=True)
    synthetic.write_pick_place_episode(episodes / 'episode_0002', success=True, policy=True)
    mcap = next((episodes / 'episode_0002').glob('*.mcap'))
    os.truncate(mcap, mcap.stat().st_size // 2)  # the recorder died: no footer
    results = {
        'teleop': {'seed': 1, 'success': True, 'max_reward': 4},
        'episodes': [
            {'seed': 2, 'success': False, 'max_reward': 1, 'chunks_executed': 8},
            {'seed': 3, 'success': True, 'max_reward': 4, 'seconds_to_success': 3.2},
            {'seed': 4, 'success': False, 'max_reward': 0},
        ],
    }
    (run / 'closed_loop.json').write_text(json.dumps(results))

    page = write_demo_summary(run)
    assert page == run / 'summary.html'
    html = page.read_text()
    rows = _rows(html)
    assert [r[:3] for r in rows] == [
        ['teleop', '1', '<span class="ok">yes</span>'],
        ['policy', '2', '<span class="bad">no</span>'],
        ['policy', '3', '<span class="ok">yes</span>'],
        ['policy', '4', '<span class="bad">no</span>'],
    ]
    assert '1/3 closed-loop episodes succeeded' in html
    links = re.findall(r'href="([^"#]+)"', html)
    assert links == ['episodes/episode_0000/report.html', 'episodes/episode_0001/report.html']
    for link in links:
        assert '<section id="joints"' in (run / link).read_text()
    assert 'episode_0002: <span class="bad">no report</span>' in rows[2][-1]
    assert 'unfinished bag' in rows[2][-1]
    assert 'no bag recorded' in rows[3][-1]
    assert not (episodes / 'episode_0002' / 'report.html').exists()


def test_eval_summary_links_the_contact_sheets_of_failures(tmp_path):
    document = {
        'clock': 'lockstep',
        'policy': {'checkpoint': 'models/halo-tiny-transfer-cube', 'backend': 'onnxruntime'},
        'summary': {'episodes': 2, 'successes': 1, 'wilson95': [0.09, 0.91]},
        'episodes': [
            {'seed': 1000, 'success': True, 'stage': 'success', 'max_reward': 4, 'chunks': 9},
            {'seed': 1001, 'success': False, 'stage': 'grasp', 'max_reward': 1, 'chunks': 12},
        ],
    }
    (tmp_path / 'eval.json').write_text(json.dumps(document))
    (tmp_path / 'failure_seed1001.png').write_bytes(b'\x89PNG\r\n\x1a\n')
    html = write_eval_summary(tmp_path).read_text()
    rows = _rows(html)
    assert [r[0] for r in rows] == ['1000', '1001']
    assert rows[0][-1] == '<span class="muted">-</span>'
    assert rows[1][-1] == '<a href="failure_seed1001.png">failure_seed1001.png</a>'
    assert '1/2 succeeded (95 % Wilson interval 9-91 %)' in html


def test_a_run_without_results_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'no eval.json in {tmp_path}'):
        write_eval_summary(tmp_path)
    (tmp_path / 'closed_loop.json').write_text('{not json')
    with pytest.raises(ValueError, match='closed_loop.json: not JSON'):
        write_demo_summary(Path(tmp_path))
    assert not (tmp_path / 'summary.html').exists()
