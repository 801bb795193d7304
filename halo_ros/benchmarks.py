"""Shared benchmark reporting: every benchmark prints one table and can write the same JSON.

The JSON carries the machine it ran on, so figures copied into BENCHMARKS.md keep their context.
`--plot FILE.png` (the CLI adds it to every bench-* command and seam-eval) draws the same rows
beside it (`halo_ros.viz.bench_plot`, matplotlib).
"""

import contextvars
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def machine() -> dict:
    """What the figures came from: CPU model, cores, memory, Python, and load at the time."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    memory_gb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9
    return {
        'cpu': cpu,
        'cores': os.cpu_count(),
        'memory_gb': round(memory_gb, 1),
        'python': platform.python_version(),
        'load_avg_1m': round(os.getloadavg()[0], 2),
        'date': time.strftime('%Y-%m-%d %H:%M'),
    }


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(row.get(c, '')) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append('  '.join('-' * w for w in widths))
    lines += ['  '.join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return '\n'.join(lines)


def report(name: str, rows: Sequence[dict], json_path: str | None = None, **extra) -> dict:
    """Print the table (with the machine) and write the JSON if asked; returns the JSON object."""
    result = {'benchmark': name, 'machine': machine(), 'rows': list(rows), **extra}
    m = result['machine']
    print(f'\n{name} -- {m["cpu"]}, {m["cores"]} cores, load {m["load_avg_1m"]}')
    print(table(rows))
    if json_path:
        with open(json_path, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=1)
        print(f'wrote {json_path}')
    plot = _plot.get()
    if plot is not None:
        from halo_ros.viz.bench_plot import plot_rows

        print(f'wrote {plot_rows(name, rows, plot.next_path())}')
    return result


@dataclass
class _PlotRequest:
    path: Path
    written: list[Path] = field(default_factory=list)

    def next_path(self) -> Path:
        """FILE.png for the first table a command reports, FILE-2.png for a second, ..."""
        k = len(self.written)
        path = self.path if k == 0 else self.path.with_name(f'{self.path.stem}-{k + 1}.png')
        self.written.append(path)
        return path


# Set for the run of one command by run_plotted, so report() needs no argument for it.
_plot: contextvars.ContextVar[_PlotRequest | None] = contextvars.ContextVar('plot', default=None)


def run_plotted(run: Callable, args, command: str) -> int:
    """Run a benchmark command with `--plot`: report() draws each table it prints; a benchmark
    that writes its own JSON instead (no report()) is drawn from that JSON."""
    request = _PlotRequest(Path(args.plot))
    token = _plot.set(request)
    try:
        code = int(run(args) or 0)
    finally:
        _plot.reset(token)
    if request.written:
        return code
    json_path = getattr(args, 'json', None)
    if not json_path or not Path(json_path).is_file():
        log.error(
            '%s --plot: it writes no shared table; add --json FILE, whose rows are drawn', command
        )
        return code or 2
    from halo_ros.viz.bench_plot import plot_rows, rows_from_json

    try:
        with open(json_path, encoding='utf-8') as f:
            print(f'wrote {plot_rows(command, rows_from_json(json.load(f)), request.path)}')
    except ValueError as error:  # not JSON, or nothing numeric in it
        log.error('%s --plot: %s', command, error)
        return code or 2
    return code


def _fmt(value) -> str:
    if isinstance(value, float):
        return f'{value:.3g}' if abs(value) < 100 else f'{value:.0f}'
    return str(value)
