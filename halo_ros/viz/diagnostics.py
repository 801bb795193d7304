"""Drops and faults by reason from an episode's `diagnostics` messages.

Every halo_ros node reports running totals at 1 Hz (the policy's `drops_<reason>`, the recorder's
`drops/<topic|reason>`, the controller's `rejections.*`, `read_failures.*`, `missed_ticks`, ...).
What happened during the episode is how much each total rose between the episode's first and last
message; a total that falls (the node restarted) starts again from zero.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field

# Counter names that count something going wrong (matched as substrings of the key).
FAULT_KEYS = (
    'drops',
    'dropped',
    'rejections',
    'failures',
    'missed',
    'events.',
    'limits_hit',
    'losses',
    'reopens',
    'stale',
)
LEVELS = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}


@dataclass(frozen=True)
class FaultCount:
    source: str  # the DiagnosticStatus name, e.g. 'halo_ros: policy'
    reason: str  # the counter's key
    during: float  # how much it rose during the episode
    total: float  # its last value (since the node started)


@dataclass(frozen=True)
class DiagnosticsSummary:
    messages: int = 0
    levels: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> level -> count
    problems: list[tuple[str, str, str, int]] = field(default_factory=list)  # (src, lvl, msg, n)
    faults: list[FaultCount] = field(default_factory=list)  # only those that rose


def summarize_diagnostics(messages) -> DiagnosticsSummary:
    """`messages`: (log_ns, [DiagnosticStatus]) in bag order."""
    levels: dict[str, Counter] = defaultdict(Counter)
    problems: Counter = Counter()
    rises: dict[tuple[str, str], float] = defaultdict(float)
    last: dict[tuple[str, str], float] = {}
    seen_sources: set[str] = set()
    for _, statuses in messages:
        for status in statuses:
            level = LEVELS.get(_level(status.level), str(status.level))
            levels[status.name][level] += 1
            if level != 'OK':
                problems[status.name, level, status.message] += 1
            first_of_source = status.name not in seen_sources
            seen_sources.add(status.name)
            for kv in status.values:
                if not any(k in kv.key for k in FAULT_KEYS):
                    continue
                value = _number(kv.value)
                if value is None:
                    continue
                key = (status.name, kv.key)
                if key not in last:
                    # Present in the source's first message: its value predates the episode.
                    last[key] = value if first_of_source else 0.0
                previous = last[key]
                rises[key] += value - previous if value >= previous else value
                last[key] = value
    faults = [
        FaultCount(source, reason, rises[source, reason], last[source, reason])
        for source, reason in sorted(last)
        if rises[source, reason] > 0
    ]
    return DiagnosticsSummary(
        messages=len(messages),
        levels={name: dict(c) for name, c in sorted(levels.items())},
        problems=[(s, lvl, msg, n) for (s, lvl, msg), n in problems.most_common()],
        faults=faults,
    )


def _level(value) -> int:
    # rosbags gives the byte-typed level as an int; a bytes value from other readers is handled too
    return value[0] if isinstance(value, bytes | bytearray) else int(value)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # NaN counts nothing
