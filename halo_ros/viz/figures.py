"""The report's figures, drawn with matplotlib's object API (no pyplot state) into PNG bytes.

Static PNGs and not an interactive plot library: a two-minute episode has ~6,000 ticks x 14 joints
x 2 lines, which a browser would have to lay out in JavaScript on every open; a PNG opens at once
and keeps the file to a few MB.
"""

import io

import numpy as np

from halo_ros.viz.episode import Episode

MODE_COLORS = {'HOLD': '#9e9e9e', 'TELEOP': '#1f77b4', 'POLICY': '#2ca02c', 'ESTOP': '#d62728'}
SWITCH_COLOR = '#ff7f0e'
DPI = 80


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=DPI, bbox_inches='tight')
    return buffer.getvalue()


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout='constrained')


def _xlim(ax, ep: Episode) -> None:
    start = min(0.0, ep.command_t_s[0], *(c.observation_s for c in ep.chunks[:1]))
    margin = 0.01 * max(ep.duration_s - start, 1e-3)
    ax.set_xlim(start - margin, ep.duration_s + margin)


def _mark_switches(ax, ep: Episode) -> None:
    for t in ep.switches_s:
        ax.axvline(t, color=SWITCH_COLOR, lw=0.6, alpha=0.6)


def runs(values, t_s):
    """(value, start_s, end_s) of each run of equal values along t_s."""
    out = []
    start = 0
    for k in range(1, len(values) + 1):
        if k == len(values) or values[k] != values[start]:
            end = t_s[k] if k < len(values) else t_s[-1]
            out.append((values[start], float(t_s[start]), float(end)))
            start = k
    return out


def timeline(ep: Episode) -> bytes:
    """Modes and interventions, reasoning cycles, chunk latency and delay, reward: one time axis."""
    fig = _figure(13, 8.5)
    axes = fig.subplots(5, 1, sharex=True, height_ratios=[0.6, 2.2, 1.5, 1.2, 1.2])
    mode_ax, reason_ax, latency_ax, delay_ax, reward_ax = axes
    if ep.ticks is not None:
        for mode, start, end in runs(ep.ticks.mode, ep.ticks.t_s):
            mode_ax.axvspan(start, end, 0.35, 1, color=MODE_COLORS.get(mode, '#bcbd22'))
            if end - start > 0.06 * max(ep.duration_s, 1e-3):
                mode_ax.text((start + end) / 2, 0.67, mode, ha='center', va='center', fontsize=8)
        for flag, start, end in runs(list(ep.ticks.intervention), ep.ticks.t_s):
            if flag:
                mode_ax.axvspan(start, end, 0, 0.3, color='#9467bd')
                mode_ax.text(start, 0.15, ' intervention', va='center', fontsize=7, color='w')
    mode_ax.set_yticks([])
    mode_ax.set_ylabel('mode', rotation=0, ha='right', va='center')

    last_subtask = None
    for k, cycle in enumerate(ep.reasoning):
        y = k % 4
        color = '#2ca02c' if cycle.accepted else '#7f7f7f'
        reason_ax.plot([cycle.observation_s, cycle.received_s], [y, y], color=color, lw=3)
        reason_ax.plot(cycle.received_s, y, 'o', color=color, ms=3)
        if cycle.subtask != last_subtask:
            label = cycle.subtask if len(cycle.subtask) <= 48 else cycle.subtask[:46] + '...'
            reason_ax.text(cycle.observation_s, y + 0.3, label, fontsize=7, va='bottom')
            last_subtask = cycle.subtask
    reason_ax.set_ylim(-0.6, 4.2)
    reason_ax.set_yticks([])
    reason_ax.set_ylabel('reasoning\n(observation\n-> published)', rotation=0, ha='right')

    tagged = [c for c in ep.chunks if c.tag is not None]
    obs = np.array([c.observation_s for c in ep.chunks])
    latency = np.array([c.latency_ms for c in ep.chunks])
    executed = np.array([c.started_s is not None for c in ep.chunks], bool)
    if len(ep.chunks):
        latency_ax.vlines(obs, 0, latency, color='#1f77b4', lw=0.8)
        latency_ax.plot(obs[executed], latency[executed], 'o', ms=3, color='#1f77b4')
        latency_ax.plot(obs[~executed], latency[~executed], 'x', ms=4, color='#7f7f7f')
    latency_ax.set_ylabel('chunk latency ms\n(o executed, x not)', rotation=0, ha='right')
    if tagged:
        delay = [c.tag.delay_steps for c in tagged]
        delay_ax.vlines([c.observation_s for c in tagged], 0, delay, color='#8c564b', lw=0.8)
        delay_ax.plot([c.observation_s for c in tagged], delay, 'o', ms=3, color='#8c564b')
    delay_ax.set_ylabel('planned delay\n(steps)', rotation=0, ha='right')

    t, reward = ep.reward
    if len(t):
        reward_ax.step(t, reward, where='post', color='#17becf')
    if ep.success_s is not None:
        reward_ax.axvline(ep.success_s, color='#2ca02c', lw=2)
        reward_ax.text(ep.success_s, 3.6, 'success ', color='#2ca02c', fontsize=8, ha='right')
    reward_ax.set_ylim(-0.2, 4.4)
    reward_ax.set_yticks(range(5))
    reward_ax.set_ylabel('reward stage', rotation=0, ha='right')
    reward_ax.set_xlabel('time in the episode (s)')
    for ax in axes:
        _mark_switches(ax, ep)
        ax.grid(axis='x', alpha=0.3)
    _xlim(reward_ax, ep)
    return png(fig)


def joints(ep: Episode) -> bytes:
    """Per joint: commanded vs measured, chunk switches marked; the following error beneath."""
    n = len(ep.joint_names)
    columns = 2 if n % 2 == 0 else 1
    rows = n // columns
    fig = _figure(14, 2.2 * rows)
    grid = fig.add_gridspec(2 * rows, columns, height_ratios=[2.2, 1] * rows)
    t = ep.command_t_s
    share = None
    for j, name in enumerate(ep.joint_names):
        row, col = (j % rows, j // rows)
        ax = fig.add_subplot(grid[2 * row, col], sharex=share)
        share = share or ax
        err_ax = fig.add_subplot(grid[2 * row + 1, col], sharex=share)
        ax.plot(t, ep.command[:, j], color='#1f77b4', lw=1, label='commanded')
        ax.plot(t, ep.measured[:, j], color='#d62728', lw=1, label='measured')
        err_ax.plot(t, ep.command[:, j] - ep.measured[:, j], color='#555555', lw=0.8)
        err_ax.axhline(0, color='k', lw=0.4)
        unit = '0..1' if name.endswith('gripper') else 'rad'
        ax.set_title(f'{name} ({unit})', fontsize=9, loc='left')
        err_ax.set_ylabel('error', fontsize=7)
        for a in (ax, err_ax):
            _mark_switches(a, ep)
            a.tick_params(labelsize=7)
        ax.tick_params(labelbottom=False)
        if j == 0:
            ax.legend(fontsize=7, loc='upper right')
    _xlim(share, ep)
    return png(fig)
