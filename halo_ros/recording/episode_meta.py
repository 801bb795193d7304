"""Episode metadata: what was asked, on which robot with which calibration and model, and how it
ended. It travels three ways so no single loss erases it: a `halo/episode_meta` String message in
the bag (JSON, written at start and again at stop; the last one wins), the bag's `custom_data`
in metadata.yaml, and a sidecar `episode.yaml` inside the bag folder (ROS tools ignore it).
"""

import enum
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml

SIDECAR_NAME = 'episode.yaml'


class Outcome(enum.Enum):
    UNKNOWN = 'unknown'
    SUCCESS = 'success'
    FAILURE = 'failure'


class EpisodeStatus(enum.Enum):
    RECORDING = 'recording'  # still open, or the recorder died (see `recover`)
    COMPLETE = 'complete'
    DISK_FULL = 'disk_full'  # stopped early; everything before the error is in the bag
    FAILED = 'failed'  # another write error; the message says which
    RECOVERED = 'recovered'  # salvaged after the recorder died


@dataclass(frozen=True)
class EpisodeMeta:
    """One episode's metadata. Hashes are opaque strings (e.g. sha256 of the files)."""

    episode_id: str
    instruction: str = ''
    robot: str = ''
    calibration_hash: str = ''
    model_hash: str = ''
    operator_note: str = ''
    outcome: Outcome = Outcome.UNKNOWN
    reward: float | None = None  # last reward seen (sim) or set by the operator
    status: EpisodeStatus = EpisodeStatus.RECORDING
    error: str = ''
    start_time_ns: int = 0  # wall clock of the first accepted message (recorder clock)
    end_time_ns: int = 0
    message_counts: dict[str, int] = field(default_factory=dict)  # written, by topic
    drops: dict[str, int] = field(default_factory=dict)  # 'topic|reason' -> count
    # written_bytes, writer_cpu_s, duration_s: the recorder's own cost, for benchmarks and ops
    writer_stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not self.episode_id or '/' in self.episode_id:
            raise ValueError(f'episode_id must be a non-empty file name, got {self.episode_id!r}')
        if self.reward is not None and not math.isfinite(self.reward):
            raise ValueError(f'reward must be finite, got {self.reward!r}')

    def with_(self, **changes) -> 'EpisodeMeta':
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d['outcome'] = self.outcome.value
        d['status'] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'EpisodeMeta':
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f'unknown episode metadata keys: {sorted(unknown)}')
        d = dict(d)
        d['outcome'] = Outcome(d.get('outcome', Outcome.UNKNOWN.value))
        d['status'] = EpisodeStatus(d.get('status', EpisodeStatus.RECORDING.value))
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> 'EpisodeMeta':
        return cls.from_dict(json.loads(text))

    def custom_data(self) -> dict[str, str]:
        """Flat string pairs for rosbag2's metadata.yaml `custom_data`."""
        d = self.to_dict()
        return {
            f'halo.{k}': v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            for k, v in d.items()
        }


def write_sidecar(bag_dir: Path, meta: EpisodeMeta) -> Path:
    """Atomically (write + rename) replace `bag_dir/episode.yaml`."""
    path = Path(bag_dir) / SIDECAR_NAME
    tmp = path.with_suffix('.yaml.tmp')
    with open(tmp, 'w', encoding='utf-8') as f:
        yaml.safe_dump(meta.to_dict(), f, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_sidecar(bag_dir: Path) -> EpisodeMeta:
    path = Path(bag_dir) / SIDECAR_NAME
    if not path.is_file():
        raise FileNotFoundError(f'no episode sidecar {path}')
    with open(path, encoding='utf-8') as f:
        return EpisodeMeta.from_dict(yaml.safe_load(f))
