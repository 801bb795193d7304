"""A run's summary page: success per seed, each episode linked to what there is to look at.

`halo-ros demo` records a bag per episode, so its page links each episode's report (written here,
beside the bag); `halo-ros eval` records no bags, so its page links the contact sheet of each
failed episode. Both pages are `summary.html` in the run folder, with relative links, so the
folder can be copied elsewhere whole.
"""

import json
import logging
import os
from pathlib import Path

from halo_ros.viz import html as H

log = logging.getLogger(__name__)

SUMMARY_NAME = 'summary.html'


def write_demo_summary(run_dir) -> Path:
    """Reports for the bags under `<run_dir>/episodes/` and a page of `closed_loop.json`.

    The demo records its teleoperated demonstration first, then the closed-loop episodes in
    order, so the bags (sorted by name: the recorder numbers them) pair with the results in that
    order. A report that cannot be written is named on the page with the reason.
    """
    from halo_ros.viz.report import write_report

    run_dir = Path(run_dir)
    results = _read_json(run_dir / 'closed_loop.json')
    episodes = run_dir / 'episodes'
    bags = sorted(p for p in episodes.iterdir() if p.is_dir()) if episodes.is_dir() else []
    rows_in = ([('teleop', results['teleop'])] if results.get('teleop') else []) + [
        ('policy', r) for r in results.get('episodes', [])
    ]
    rows = []
    for k, bag in enumerate(bags):
        kind, result = rows_in[k] if k < len(rows_in) else ('unmatched', {})
        try:
            report = write_report(bag)
            link = f'<a href="{H.esc(_relative(report, run_dir))}">{H.esc(bag.name)}</a>'
        except (ValueError, OSError, ImportError) as error:  # one bad episode hides no other
            log.warning('%s: no report (%s)', bag, error)
            link = f'{H.esc(bag.name)}: <span class="bad">no report</span> ({H.esc(error)})'
        rows.append(_demo_row(kind, result, link))
    for kind, result in rows_in[len(bags) :]:
        rows.append(_demo_row(kind, result, '<span class="muted">no bag recorded</span>'))
    policy = [r for kind, r in rows_in if kind == 'policy']
    successes = sum(bool(r.get('success')) for r in policy)
    intro = (
        f'<p>{successes}/{len(policy)} closed-loop episodes succeeded &middot; '
        f'<span class="muted">{H.esc(run_dir)}</span></p>'
    )
    headers = ('kind', 'seed', 'success', 'best reward', 'to success (s)', 'chunks executed')
    body = _raw_table((*headers, 'episode report'), rows)
    page = H.page('halo_ros demo', 'halo_ros demo', [('episodes', 'Episodes', body)], intro)
    return H.write_atomic(run_dir / SUMMARY_NAME, page)


def write_eval_summary(out_dir) -> Path:
    """A page of `<out_dir>/eval.json`, linking the contact sheets `failure_seed<N>.png`."""
    out_dir = Path(out_dir)
    document = _read_json(out_dir / 'eval.json')
    summary = document.get('summary', {})
    rows = []
    for e in document.get('episodes', []):
        sheet = out_dir / f'failure_seed{e.get("seed")}.png'
        link = (
            f'<a href="{H.esc(sheet.name)}">{H.esc(sheet.name)}</a>'
            if sheet.is_file()
            else '<span class="muted">-</span>'
        )
        rows.append(
            [
                H.esc(e.get('seed', '?')),
                _verdict(e.get('success')),
                H.esc(e.get('stage', '')),
                H.esc(e.get('max_reward', '')),
                H.esc(_or_dash(e.get('seconds_to_success'))),
                H.esc(e.get('chunks', '')),
                H.esc(e.get('reasoning_cycles', '')),
                link,
            ]
        )
    low, high = summary.get('wilson95', (0.0, 1.0))
    policy = document.get('policy', {})
    intro = (
        f'<p>{summary.get("successes", 0)}/{summary.get("episodes", len(rows))} succeeded '
        f'(95 % Wilson interval {100 * low:.0f}-{100 * high:.0f} %) &middot; clock '
        f'{H.esc(document.get("clock", "?"))} &middot; '
        f'{H.esc(policy.get("checkpoint") or "random weights")} on '
        f'{H.esc(policy.get("backend", "?"))} &middot; '
        f'<span class="muted">{H.esc(out_dir)}</span></p>'
    )
    headers = ('seed', 'success', 'stage', 'best reward', 'to success (s)', 'chunks', 'reasoning')
    body = _raw_table((*headers, 'contact sheet'), rows)
    page = H.page('halo_ros eval', 'halo_ros eval', [('episodes', 'Episodes', body)], intro)
    return H.write_atomic(out_dir / SUMMARY_NAME, page)


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f'no {path.name} in {path.parent}: nothing to summarize') from None
    except json.JSONDecodeError as error:
        raise ValueError(f'{path}: not JSON ({error})') from None


def _demo_row(kind: str, result: dict, link: str) -> list[str]:
    return [
        H.esc(kind),
        H.esc(result.get('seed', '-')),
        _verdict(result.get('success')),
        H.esc(result.get('max_reward', '-')),
        H.esc(_or_dash(result.get('seconds_to_success'))),
        H.esc(result.get('chunks_executed', '-')),
        link,
    ]


def _verdict(success) -> str:
    if success is None:
        return '<span class="muted">-</span>'
    return '<span class="ok">yes</span>' if success else '<span class="bad">no</span>'


def _or_dash(value) -> str:
    return '-' if value is None else str(value)


def _raw_table(headers, rows) -> str:
    """A table of cells that are HTML already (escaped by the caller)."""
    head = ''.join(f'<th>{H.esc(h)}</th>' for h in headers)
    body = ''.join(
        '<tr class="episode">' + ''.join(f'<td>{c}</td>' for c in r) + '</tr>' for r in rows
    )
    return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()
