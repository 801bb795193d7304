"""What an evaluation says: success with its uncertainty, where failures stopped, latency, and a
contact sheet per failed episode (what the policy saw, imagined and said, in order)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from halo_ros.evaluation.closed_loop import STAGES, EpisodeResult, Moment


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % by default); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _percentiles(values: Sequence[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {}
    p50, p95, p99 = np.percentile(finite, [50, 95, 99])
    return {'p50': round(float(p50), 1), 'p95': round(float(p95), 1), 'p99': round(float(p99), 1)}


def summarize(results: Sequence[EpisodeResult]) -> dict:
    n = len(results)
    successes = sum(r.success for r in results)
    low, high = wilson_interval(successes, n)
    stages = Counter(r.stage for r in results)
    switch = [s for r in results for s in r.step_at_switch_rad]
    within = [s for r in results for s in r.step_within_rad]
    return {
        'episodes': n,
        'successes': successes,
        'success_rate': round(successes / n, 4) if n else 0.0,
        'wilson95': [round(low, 4), round(high, 4)],
        # staged reward reached at best: how many episodes got at least this far
        'reward_reached': {str(k): sum(r.max_reward >= k for r in results) for k in range(1, 5)},
        'reward_histogram': {str(k): sum(r.max_reward == k for r in results) for k in range(5)},
        'failure_stages': {s: stages.get(s, 0) for s in STAGES.values()},
        'seconds_to_success': _percentiles(
            [r.seconds_to_success for r in results if r.seconds_to_success is not None]
        ),
        'chunk_latency_ms': _percentiles([v for r in results for v in r.chunk_latency_ms]),
        'engine_act_ms': _percentiles([v for r in results for v in r.flow_ms]),
        'largest_step_at_switch_rad': round(max(switch, default=0.0), 4),
        'largest_step_within_chunk_rad': round(max(within, default=0.0), 4),
        'mean_step_at_switch_rad': round(float(np.mean(switch)), 4) if switch else 0.0,
        'mean_step_within_chunk_rad': round(float(np.mean(within)), 4) if within else 0.0,
    }


def summary_lines(summary: dict) -> list[str]:
    low, high = summary['wilson95']
    lines = [
        f'success {summary["successes"]}/{summary["episodes"]} '
        f'({100 * summary["success_rate"]:.0f} %, 95 % Wilson interval '
        f'{100 * low:.0f}-{100 * high:.0f} %)',
        '  reached reward 1/2/3/4 (right grasps / lifts / left touches / left holds it up): '
        + '/'.join(str(summary['reward_reached'][str(k)]) for k in range(1, 5)),
        '  failures stopped at: '
        + ', '.join(f'{stage} {count}' for stage, count in summary['failure_stages'].items()),
    ]
    if summary['chunk_latency_ms']:
        lat, act = summary['chunk_latency_ms'], summary['engine_act_ms']
        lines.append(
            f'  chunk latency (observation -> published) p50 {lat["p50"]} ms, p99 {lat["p99"]} '
            f'ms; engine act p50 {act.get("p50")} ms'
        )
    lines.append(
        f'  largest per-tick arm step at chunk switches {summary["largest_step_at_switch_rad"]} '
        f'rad (mean {summary["mean_step_at_switch_rad"]}), within chunks '
        f'{summary["largest_step_within_chunk_rad"]} rad (mean '
        f'{summary["mean_step_within_chunk_rad"]})'
    )
    return lines


def contact_sheet(
    moments: Sequence[Moment], title: str, path: str | Path, *, columns: int = 6, rows: int = 2
) -> Path:
    """A PNG of up to columns x rows evenly spaced moments: the camera frame beside the subgoal
    image the chunk was conditioned on, with the time, reward and subtask under them. Where the
    reasoning said the object is (grounded checkpoints) is ringed on the frame in green."""
    import cv2

    from halo_ros.recording.grounding import parse_object_text

    if not moments:
        raise ValueError(f'contact sheet {path}: no moments recorded')
    picks = np.unique(np.linspace(0, len(moments) - 1, min(len(moments), columns * rows)).round())
    chosen = [moments[int(i)] for i in picks]
    h, w = chosen[0].frame.shape[:2]
    scale = max(1, round(240 / h))  # small frames are enlarged to be readable
    fh, fw = h * scale, w * scale
    text_h = 46
    cell_w, cell_h = 2 * fw + 6, fh + text_h
    cols = min(columns, len(chosen))
    grid_rows = math.ceil(len(chosen) / cols)
    sheet = np.full((40 + grid_rows * (cell_h + 8), cols * (cell_w + 8) + 8, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(sheet, title, (8, 26), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for k, moment in enumerate(chosen):
        y = 40 + (k // cols) * (cell_h + 8)
        x = 8 + (k % cols) * (cell_w + 8)
        frame = cv2.resize(moment.frame, (fw, fh), interpolation=cv2.INTER_NEAREST)
        said = parse_object_text(moment.object)
        if said is not None and said.xy is not None:
            centre = (round(said.xy[0] * fw), round(said.xy[1] * fh))
            cv2.circle(frame, centre, 3 * scale, (0, 220, 0), 1, cv2.LINE_AA)
        sheet[y : y + fh, x : x + fw] = frame
        if moment.subgoal is not None:
            sub = cv2.resize(moment.subgoal, (fw, fh), interpolation=cv2.INTER_AREA)
            sheet[y : y + fh, x + fw + 6 : x + 2 * fw + 6] = sub
        else:
            cv2.putText(
                sheet, 'no subgoal', (x + fw + 16, y + fh // 2), font, 0.45, (90, 90, 90), 1
            )
        caption = f't={moment.time_s:.1f}s reward {moment.reward}'
        cv2.putText(sheet, caption, (x, y + fh + 16), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        subtask = moment.subtask or '(no reasoning yet)'
        for line_no, line in enumerate(_wrap(subtask, 2 * fw // 8)[:2]):
            cv2.putText(
                sheet,
                line,
                (x, y + fh + 32 + 13 * line_no),
                font,
                0.38,
                (40, 40, 160),
                1,
                cv2.LINE_AA,
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet[..., ::-1]):
        raise OSError(f'could not write {path}')
    return path


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ''
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f'{line} {word}'.strip()
    return [*lines, line] if line else lines
