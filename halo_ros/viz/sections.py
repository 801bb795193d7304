"""The report's sections, each from an `Episode` to HTML (plots inline, tables escaped)."""

import numpy as np

from halo_ros.viz import figures
from halo_ros.viz import html as H
from halo_ros.viz.episode import GOAL_CAMERA, Episode


def overview(ep: Episode) -> str:
    executed = sum(c.started_s is not None for c in ep.chunks)
    rows = [
        ('episode', ep.meta.episode_id),
        ('instruction', ep.meta.instruction or '-'),
        ('robot', ep.meta.robot or '-'),
        ('outcome', {True: 'success', False: 'failure', None: 'unknown'}[ep.success]),
        ('final reward', '-' if ep.final_reward is None else ep.final_reward),
        (
            'recording status',
            ep.meta.status.value + (f' ({ep.meta.error})' if ep.meta.error else ''),
        ),
        ('duration (s)', round(ep.duration_s, 2)),
        ('controller ticks', 0 if ep.ticks is None else len(ep.ticks.t_s)),
        ('chunks received / executed', f'{len(ep.chunks)} / {executed}'),
        ('chunk switches', len(ep.switches_s)),
        ('reasoning cycles', len(ep.reasoning)),
        ('messages recorded', sum(ep.meta.message_counts.values())),
        ('messages the recorder dropped', sum(ep.meta.drops.values())),
    ]
    if ep.meta.operator_note:
        rows.append(('operator note', ep.meta.operator_note))
    return H.table(('', ''), rows)


def timeline(ep: Episode) -> str:
    executed = [c for c in ep.chunks if c.started_s is not None]
    latency = np.array([c.latency_ms for c in ep.chunks])
    summary = (
        f'<p>{len(ep.chunks)} chunks ({len(executed)} executed), {len(ep.switches_s)} chunk '
        'switches (orange lines here and in the joint plots), '
        f'{len(ep.reasoning)} reasoning cycles. Chunk latency = receive time in the bag minus the '
        'stamp of the observation it was computed from'
        + (
            f': p50 {np.percentile(latency, 50):.0f} ms, max {latency.max():.0f} ms.'
            if len(latency)
            else '.'
        )
        + ' Bars: each reasoning cycle from its observation to its publication (grey: not '
        'accepted); the subtask is written where it changed.</p>'
    )
    cycles = H.table(
        ('#', 'observation (s)', 'published (s)', 'latency (ms)', 'context', 'accepted', 'subtask'),
        (
            (
                k,
                c.observation_s,
                c.received_s,
                c.latency_ms,
                c.context_version,
                c.accepted,
                c.subtask,
            )
            for k, c in enumerate(ep.reasoning)
        ),
        row_class='reasoning-cycle',
    )
    chunks = H.table(
        (
            'seq',
            'epoch',
            'context',
            'delay (steps)',
            'observation (s)',
            'received (s)',
            'latency (ms)',
            'took over (s)',
        ),
        (
            (
                c.tag.seq if c.tag else '-',
                c.tag.epoch if c.tag else '-',
                c.tag.context_version if c.tag else '-',
                c.tag.delay_steps if c.tag else '-',
                _s(c.observation_s),
                _s(c.received_s),
                c.latency_ms,
                '-' if c.started_s is None else _s(c.started_s),
            )
            for c in ep.chunks
        ),
        row_class='chunk',
    )
    return (
        summary
        + H.png_img(figures.timeline(ep), 'timeline')
        + f'<details open><summary>reasoning cycles ({len(ep.reasoning)})</summary>{cycles}'
        + f'</details><details><summary>chunks ({len(ep.chunks)})</summary>{chunks}</details>'
    )


def joints(ep: Episode) -> str:
    error = np.abs(ep.command - ep.measured)
    finite = np.isfinite(error).any(axis=0)
    rows = [
        (
            name,
            float(np.nanpercentile(error[:, j], 50)) if finite[j] else float('nan'),
            float(np.nanpercentile(error[:, j], 95)) if finite[j] else float('nan'),
            float(np.nanmax(error[:, j])) if finite[j] else float('nan'),
        )
        for j, name in enumerate(ep.joint_names)
    ]
    return (
        f'<p>Blue: the command the controller sent (<code>halo/command</code>, after the safety '
        'filter); red: the follower joints measured on the same tick. Beneath each: commanded '
        f'minus measured. Orange: the {len(ep.switches_s)} chunk switches.</p>'
        + H.png_img(figures.joints(ep), 'joints')
        + '<details><summary>following error |commanded - measured|</summary>'
        + H.table(('joint', 'p50', 'p95', 'max'), rows)
        + '</details>'
    )


def imagined(ep: Episode) -> tuple[str, dict]:
    shown = [c for c in ep.reasoning if c.subgoal is not None]
    if not shown:
        return '<p class="muted">No subgoal images in this episode.</p>', {'subgoals': 0}
    rows = []
    for c in shown:
        saw = ep.frame_near(GOAL_CAMERA, c.observation_s)
        happened = ep.frame_near(GOAL_CAMERA, c.goal_s)
        cells = []
        if saw is not None:
            cells.append(H.figure(H.jpeg_img(saw, 'seen'), f'seen at {c.observation_s:.1f} s'))
        cells.append(H.figure(H.jpeg_img(c.subgoal, 'imagined'), 'imagined (subgoal)'))
        if happened is not None:
            cells.append(
                H.figure(H.jpeg_img(happened, 'happened'), f'happened at {c.goal_s:.1f} s')
            )
        rows.append(
            f'<div class="subgoal"><p><b>{c.observation_s:.1f} s</b> &middot; '
            f'{H.esc(c.subtask)}</p><div class="frames">{"".join(cells)}</div></div>'
        )
    note = (
        f'<p>{len(shown)} of {len(ep.reasoning)} cycles. A subgoal is the last frame of its '
        f'subtask, so it is set beside the {GOAL_CAMERA} frame when the policy moved on to '
        'another subtask (or at the end of the episode).</p>'
    )
    return note + ''.join(rows), {'subgoals': len(shown)}


def outcome(ep: Episode) -> str:
    from halo_ros.viz.figures import runs

    t, reward = ep.reward
    best = float(reward.max()) if len(reward) else None
    parts = [
        H.table(
            ('', ''),
            [
                ('success', {True: 'yes', False: 'no', None: 'unknown'}[ep.success]),
                ('first sim/success (s)', '-' if ep.success_s is None else _s(ep.success_s)),
                ('best reward stage', '-' if best is None else best),
                ('operator outcome', ep.meta.outcome.value),
            ],
        )
    ]
    if ep.ticks is not None:
        modes = runs(ep.ticks.mode, ep.ticks.t_s)
        parts.append('<h3>Controller modes</h3>')
        parts.append(
            H.table(
                ('mode', 'from (s)', 'to (s)', 'seconds'),
                ((m, _s(a), _s(b), _s(b - a)) for m, a, b in modes),
            )
        )
        phases = runs(ep.ticks.phase, ep.ticks.t_s)
        parts.append(f'<h3>Controller phases ({len(phases)})</h3>')
        parts.append(
            H.table(
                ('phase', 'from (s)', 'to (s)', 'seconds'),
                ((p, _s(a), _s(b), _s(b - a)) for p, a, b in phases),
            )
        )
        interventions = [(a, b) for f, a, b in runs(list(ep.ticks.intervention), ep.ticks.t_s) if f]
        parts.append(f'<h3>Interventions ({len(interventions)})</h3>')
        parts.append(
            H.table(('from (s)', 'to (s)'), ((_s(a), _s(b)) for a, b in interventions))
            if interventions
            else '<p class="muted">none</p>'
        )
        limits: dict[str, int] = {}
        for hit in ep.ticks.limits:
            for name in hit:
                limits[name] = limits.get(name, 0) + 1
        parts.append('<h3>Safety limits hit (ticks)</h3>')
        parts.append(
            H.table(('limit', 'ticks'), sorted(limits.items()))
            if limits
            else '<p class="muted">none</p>'
        )
    return ''.join(parts)


def faults(ep: Episode) -> str:
    d = ep.diagnostics
    parts = [
        f'<p>From {d.messages} <code>diagnostics</code> messages: how much each fault counter '
        "rose during the episode, and the recorder's own drops.</p>"
    ]
    rows = [(f.source, f.reason, f.during, f.total) for f in d.faults]
    rows += [
        ('recorder (episode)', reason, count, count) for reason, count in ep.meta.drops.items()
    ]
    parts.append(
        H.table(('source', 'reason', 'during the episode', 'total'), rows, row_class='fault')
        if rows
        else '<p class="ok">no drops or faults</p>'
    )
    if d.problems:
        parts.append('<h3>Non-OK status messages</h3>')
        parts.append(H.table(('source', 'level', 'message', 'times'), d.problems))
    if d.levels:
        parts.append('<h3>Status levels</h3>')
        parts.append(
            H.table(
                ('source', 'OK', 'WARN', 'ERROR', 'STALE'),
                (
                    (s, *(lv.get(k, 0) for k in ('OK', 'WARN', 'ERROR', 'STALE')))
                    for s, lv in d.levels.items()
                ),
            )
        )
    return ''.join(parts)


def cameras(ep: Episode) -> str:
    if not ep.strip:
        return '<p class="muted">No camera images in this episode.</p>'
    rows = []
    for camera, indices in ep.strip.items():
        cells = [
            H.figure(
                H.jpeg_img(ep.frames[camera, k], camera, max_width=160),
                f'{ep.camera_t_s[camera][k]:.1f} s',
            )
            for k in indices
            if (camera, k) in ep.frames
        ]
        rows.append(f'<h3>{H.esc(camera)}</h3><div class="frames">{"".join(cells)}</div>')
    return ''.join(rows)


def _s(t_s: float) -> float:
    return round(float(t_s), 2)  # times in the tables: 10 ms is finer than anything shown
