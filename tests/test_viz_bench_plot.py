"""--plot FILE.png on the benchmarks: drawn by the shared report(), or from a benchmark's JSON."""

import json
import logging
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest

from halo_ros.benchmarks import report, run_plotted
from halo_ros.viz.bench_plot import plot_rows, rows_from_json


def _image(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert('RGB'))


def _drawn(path) -> bool:
    """A real chart: coloured bars, not an empty canvas."""
    pixels = _image(path).astype(int)
    coloured = (pixels.max(axis=2) - pixels.min(axis=2) > 60).sum()
    return pixels.shape[0] > 100 and coloured > 500


def test_seam_eval_writes_a_plot_beside_its_json(tmp_path):
    json_path, png = tmp_path / 'seam-eval.json', tmp_path / 'seam-eval.png'
    result = subprocess.run(
        [sys.executable, '-m', 'halo_ros.cli', 'seam-eval', '--ticks', '120']
        + ['--json', str(json_path), '--plot', str(png)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'wrote {png}' in result.stdout
    assert json.loads(json_path.read_text())['rows'] and _drawn(png)


def test_each_reported_table_gets_its_own_plot(tmp_path, capsys):
    def bench(args):
        report('first', [{'mode': 'a', 'p50_ms': 1.0}, {'mode': 'b', 'p50_ms': 2.0}])
        report('second', [{'graph': 'vit', 'ms': 3.0}])
        return 0

    assert run_plotted(bench, Namespace(plot=str(tmp_path / 'b.png'), json=None), 'bench') == 0
    assert _drawn(tmp_path / 'b.png') and _drawn(tmp_path / 'b-2.png')


@pytest.mark.parametrize(
    'document, labels',
    [
        ({'rows': [{'mode': 'rtc', 'ms': 3.0}]}, ['rtc']),
        (  # bench-recording: a list of per-topic rows
            {
                'load': {'cameras': 3},
                'topics': [{'topic': '/a', 'sent': 9}, {'topic': '/b', 'sent': 8}],
            },
            ['/a', '/b'],
        ),
        (  # bench-dynamixel: sections of numbers, some per arm
            {
                'machine': {'cpus': 2},
                'round_trip_pty': {'follower_left': {'sync_read_ms_p50': 0.4}},
                'cpu_latency_0ms_sdk': {'cpu_share': 0.2, 'reply_latency_ms': 0.0},
            },
            ['machine', 'round_trip_pty follower_left', 'cpu_latency_0ms_sdk'],
        ),
    ],
    ids=['report', 'list-of-rows', 'sections'],
)
def test_a_benchmark_with_its_own_json_is_drawn_from_it(tmp_path, document, labels):
    json_path = tmp_path / 'own.json'

    def bench(args):
        json_path.write_text(json.dumps(document))
        return 0

    args = Namespace(plot=str(tmp_path / 'own.png'), json=str(json_path))
    assert run_plotted(bench, args, 'bench-own') == 0
    assert _drawn(tmp_path / 'own.png')
    rows = rows_from_json(document)
    assert [next(v for v in r.values() if isinstance(v, str)) for r in rows] == labels


def test_plot_without_anything_to_draw_is_a_clear_error(tmp_path, caplog):
    args = Namespace(plot=str(tmp_path / 'x.png'), json=None)
    with caplog.at_level(logging.ERROR):
        assert run_plotted(lambda a: 0, args, 'bench-quiet') == 2
    assert 'bench-quiet --plot: it writes no shared table; add --json FILE' in caplog.text
    with pytest.raises(ValueError, match='t: no numeric column to plot in 1 row'):
        plot_rows('t', [{'name': 'only text', 'flag': True}], tmp_path / 'y.png')
    assert not list(tmp_path.iterdir()), 'nothing half-written'
