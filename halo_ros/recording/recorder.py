"""Episode sessions: start, stop, discard and mark episodes; route messages to the open one.

The recorder node is a thin shell over `EpisodeRecorder`: it turns subscriptions into
`on_message` calls and services into `start`/`stop`/`discard`/`mark_outcome`.
"""

import datetime
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from halo_ros.recording.episode_meta import (
    EpisodeMeta,
    Outcome,
    read_sidecar,
    write_sidecar,
)
from halo_ros.recording.episode_writer import (
    EpisodeSummary,
    EpisodeWriter,
    RecordingDropCounter,
    WriterConfig,
)
from halo_ros.recording.topics import EPISODE_META_TOPIC, OfferedQos

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecorderConfig:
    output_dir: Path  # one sub-folder (a rosbag2 bag) per episode
    episode_prefix: str = 'episode'
    robot: str = ''  # e.g. 'aloha-sim' or the robot's calibration name
    calibration_hash: str = ''
    model_hash: str = ''
    writer: WriterConfig = WriterConfig()
    meta_topic: str = EPISODE_META_TOPIC  # resolved by the node so a namespace moves it

    def __post_init__(self):
        if not self.episode_prefix or '/' in self.episode_prefix:
            raise ValueError(f'episode_prefix must be a plain name, got {self.episode_prefix!r}')


def mark_closed_episode(bag_dir: Path, outcome: Outcome, reward: float | None = None) -> None:
    """Set the outcome of a closed episode in its sidecar and metadata.yaml custom_data."""
    meta = read_sidecar(bag_dir).with_(outcome=outcome)
    if reward is not None:
        meta = meta.with_(reward=reward)
    write_sidecar(bag_dir, meta)
    info_path = Path(bag_dir) / 'metadata.yaml'
    if info_path.is_file():
        info = yaml.safe_load(info_path.read_text())
        custom = info['rosbag2_bagfile_information'].get('custom_data') or {}
        custom.update(meta.custom_data())
        info['rosbag2_bagfile_information']['custom_data'] = custom
        tmp = info_path.with_suffix('.yaml.tmp')
        tmp.write_text(yaml.safe_dump(info, sort_keys=False))
        tmp.replace(info_path)


class EpisodeRecorder:
    """At most one open episode at a time; thread-safe."""

    def __init__(self, config: RecorderConfig):
        self.config = config
        self._lock = threading.Lock()
        self._writer: EpisodeWriter | None = None
        self._last_bag: Path | None = None
        self._instruction = ''
        self._operator_note = ''
        self._reward: float | None = None
        self._offered_qos: dict[str, tuple[OfferedQos, ...]] = {}
        self.last_summary: EpisodeSummary | None = None

    # ---- hot path ---------------------------------------------------------------------------

    def on_message(self, topic: str, msgtype: str, stamp_ns: int, data) -> None:
        writer = self._writer
        if writer is not None:
            writer.put(topic, msgtype, stamp_ns, data)
        # Between episodes nothing is recorded and nothing is counted as dropped.

    # ---- slow inputs --------------------------------------------------------------------------

    def set_instruction(self, text: str) -> None:
        with self._lock:
            self._instruction = text
            if self._writer is not None:
                self._writer.update_meta(instruction=text)

    def set_operator_note(self, text: str) -> None:
        with self._lock:
            self._operator_note = text
            if self._writer is not None:
                self._writer.update_meta(operator_note=text)

    def set_reward(self, reward: float) -> None:
        with self._lock:
            self._reward = reward
            if self._writer is not None:
                self._writer.update_meta(reward=reward)

    def set_offered_qos(self, topic: str, profiles: tuple[OfferedQos, ...]) -> None:
        with self._lock:
            self._offered_qos[topic] = tuple(profiles)
            if self._writer is not None:
                self._writer.set_offered_qos(topic, profiles)

    # ---- services -----------------------------------------------------------------------------

    def start(self) -> Path:
        with self._lock:
            if self._writer is not None:
                raise RuntimeError(f'episode {self._writer.meta.episode_id} is still recording')
            episode_id = self._next_episode_id()
            meta = EpisodeMeta(
                episode_id=episode_id,
                instruction=self._instruction,
                robot=self.config.robot,
                calibration_hash=self.config.calibration_hash,
                model_hash=self.config.model_hash,
                operator_note=self._operator_note,
            )
            self._reward = None
            writer = EpisodeWriter(
                self.config.output_dir / episode_id,
                meta,
                config=self.config.writer,
                meta_topic=self.config.meta_topic,
            )
            for topic, profiles in self._offered_qos.items():
                writer.set_offered_qos(topic, profiles)
            writer.start()
            self._writer = writer
            self._last_bag = writer.bag_dir
            return writer.bag_dir

    def stop(self) -> EpisodeSummary:
        with self._lock:
            writer = self._require_open('stop')
            self._writer = None
        self.last_summary = writer.stop()
        return self.last_summary

    def discard(self) -> Path:
        with self._lock:
            if self._writer is not None:
                writer, self._writer = self._writer, None
                writer.discard()
                self._last_bag = None
                return writer.bag_dir
            if self._last_bag is None:
                raise RuntimeError('no episode to discard')
            bag, self._last_bag = self._last_bag, None
        import shutil

        shutil.rmtree(bag, ignore_errors=True)
        logger.info('discarded episode %s', bag.name)
        return bag

    def mark_outcome(self, outcome: Outcome) -> Path:
        """Mark the open episode, or the last closed one if none is open."""
        with self._lock:
            if self._writer is not None:
                self._writer.update_meta(outcome=outcome)
                return self._writer.bag_dir
            if self._last_bag is None:
                raise RuntimeError('no episode to mark')
            mark_closed_episode(self._last_bag, outcome)
            return self._last_bag

    # ---- state ----------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self._writer is not None

    @property
    def writer(self) -> EpisodeWriter | None:
        return self._writer

    def poll_failure(self) -> EpisodeSummary | None:
        """If the open episode stopped itself (disk full), close it and return its summary."""
        writer = self._writer
        if writer is None or writer.error is None:
            return None
        with self._lock:
            if self._writer is not writer:
                return None
            self._writer = None
        self.last_summary = writer.stop()
        return self.last_summary

    def drops(self) -> RecordingDropCounter | None:
        writer = self._writer
        return writer.drops if writer is not None else None

    def _require_open(self, what: str) -> EpisodeWriter:
        if self._writer is None:
            raise RuntimeError(f'cannot {what}: no episode is recording')
        return self._writer

    def _next_episode_id(self) -> str:
        out = self.config.output_dir
        out.mkdir(parents=True, exist_ok=True)
        index = sum(1 for p in out.iterdir() if p.name.startswith(self.config.episode_prefix + '_'))
        stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
        while True:
            episode_id = f'{self.config.episode_prefix}_{index:04d}_{stamp}'
            if not (out / episode_id).exists():
                return episode_id
            index += 1
