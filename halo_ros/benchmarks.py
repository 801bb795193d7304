"""Shared benchmark reporting: every benchmark prints one table and can write the same JSON.

The JSON carries the machine it ran on, so figures copied into BENCHMARKS.md keep their context.
"""

import json
import os
import platform
import time
from collections.abc import Sequence


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
    return result


def _fmt(value) -> str:
    if isinstance(value, float):
        return f'{value:.3g}' if abs(value) < 100 else f'{value:.0f}'
    return str(value)
