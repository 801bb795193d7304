"""`RemoteEngine`: the `Engine` ABC over ZeroMQ, for a robot that cannot hold the model.

Robot side needs numpy, pyzmq and msgpack (OpenCV only to resize or JPEG frames); torch is never
imported here. Each of the runtime's two threads gets its own DEALER socket ("lane": act,
reason; a third for health checks), so a reasoning cycle in flight never blocks a chunk.

Failure handling (`channel.Lane`): every request has a timeout; a lost server makes the call
raise `RemoteUnavailable` and the lane reconnect with backoff, with a fresh handshake that must
match the first one. The actor treats the raise as a dropped chunk: nothing stale is published.

Seams: the runtime hands `act` its plain-data `SeamPlan`, which is sent as it is; the server's
engine builds its own conditioning from it (a velocity function cannot cross the network once per
flow step). A plan the server cannot follow (rtc without gradients) is refused before sending.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import zmq

from halo_ros.engine.interface import (
    ActionResult,
    Engine,
    EngineInfo,
    EngineInputError,
    Observation,
    Reasoning,
    check_array,
    check_seam,
)
from halo_ros.transport import protocol
from halo_ros.transport.channel import (
    HandshakeError,
    Lane,
    RemoteError,
    RemoteUnavailable,
)
from halo_ros.transport.images import encode_frame, fit
from halo_ros.transport.protocol import Handshake, Op
from halo_ros.transport.security import ClientKeys, check_connect
from halo_ros.transport.wire import ProtocolError, WireLimits, encode_array

__all__ = ['HandshakeError', 'RemoteConfig', 'RemoteEngine', 'RemoteError', 'RemoteUnavailable']

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteConfig:
    act_timeout_s: float = 1.0  # a chunk later than this is worthless anyway
    reason_timeout_s: float = 30.0  # reasoning cycles are slow (and slower on CPU)
    connect_timeout_s: float = 10.0  # for the first handshake (server may still be loading)
    health_timeout_s: float = 1.0
    min_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    jpeg_quality: int = 0  # 0: raw frames (bit-exact); 1..100: JPEG at that quality
    keys: ClientKeys | None = None  # CURVE; required when the server binds beyond loopback
    # Plaintext to a server beyond loopback (observations, commands and the model's answers
    # readable and forgeable on the network): refused unless this is set, as the server refuses
    # an open bind.
    insecure: bool = False
    # What the robot needs; a mismatch refuses the server. None/'' = accept what it reports.
    model_hash: str = ''
    chunk_length: int | None = None
    action_dim: int | None = None
    control_period_s: float | None = None
    cameras: tuple[str, ...] | None = None
    limits: WireLimits = WireLimits()

    def __post_init__(self):
        if min(self.act_timeout_s, self.reason_timeout_s, self.health_timeout_s) <= 0:
            raise ValueError('timeouts must be positive')
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be 0..100, got {self.jpeg_quality}')
        if not 0 < self.min_backoff_s <= self.max_backoff_s:
            raise ValueError(f'backoff {self.min_backoff_s}..{self.max_backoff_s} s is not a range')


def check_handshake(handshake: Handshake, config: RemoteConfig) -> None:
    info = handshake.info
    wrong = []
    if config.model_hash and info.model_hash != config.model_hash:
        wrong.append(f'model hash {info.model_hash!r} (expected {config.model_hash!r})')
    if config.chunk_length is not None and info.chunk_length != config.chunk_length:
        wrong.append(f'chunk length {info.chunk_length} (expected {config.chunk_length})')
    if config.action_dim is not None and info.action_dim != config.action_dim:
        wrong.append(f'action dim {info.action_dim} (expected {config.action_dim})')
    if config.cameras is not None and tuple(info.cameras) != tuple(config.cameras):
        wrong.append(f'cameras {list(info.cameras)} (expected {list(config.cameras)})')
    if config.control_period_s is not None:
        expected_ns = round(config.control_period_s * 1e9)
        if handshake.control_period_ns != expected_ns:
            wrong.append(
                f'control period {handshake.control_period_ns} ns (expected {expected_ns} ns)'
            )
    frames_bytes = len(info.cameras) * info.image_hw[0] * info.image_hw[1] * 3
    if config.jpeg_quality == 0 and frames_bytes + (64 << 10) > handshake.max_message_bytes:
        wrong.append(
            f'raw frames of {frames_bytes} bytes for a {handshake.max_message_bytes} byte '
            'message limit (use JPEG)'
        )
    if wrong:
        raise HandshakeError(
            f'server runs {info.model_name}/{info.backend} with ' + ', '.join(wrong)
        )


class RemoteEngine(Engine):
    def __init__(self, endpoint: str, config: RemoteConfig = RemoteConfig()):
        check_connect(endpoint, config.keys, insecure=config.insecure)
        self.endpoint = endpoint
        self.config = config
        self._context = zmq.Context()
        self._lanes = {
            name: Lane(name, self._context, endpoint, config)
            for name in ('act', 'reason', 'health')
        }
        self._handshake: Handshake | None = None
        self.last_timings_ms: dict[str, float] = {}
        deadline = time.monotonic() + config.connect_timeout_s
        while True:  # the first handshake fixes what every later connection must match
            try:
                self._lanes['health'].call(Op.HEALTH, {}, config.health_timeout_s, self._hello)
                break
            except RemoteUnavailable:
                if time.monotonic() >= deadline:
                    self.close()
                    raise RemoteUnavailable(
                        f'no engine server at {endpoint} within {config.connect_timeout_s:g} s'
                    ) from None
                time.sleep(config.min_backoff_s)
            except Exception:
                self.close()
                raise
        info = self._handshake.info
        log.info(
            'remote engine at %s: %s on %s, hash %s, chunks of %d',
            endpoint,
            info.model_name,
            info.backend,
            info.model_hash,
            info.chunk_length,
        )

    def _hello(self, lane: Lane) -> None:
        body, _, _ = lane.exchange(Op.HELLO, {}, self.config.health_timeout_s)
        try:
            handshake = protocol.parse_hello(body)
        except ProtocolError as error:
            raise HandshakeError(f'unreadable handshake from {self.endpoint}: {error}') from None
        if self._handshake is None:
            check_handshake(handshake, self.config)
            self._handshake = handshake
        elif handshake != self._handshake:
            raise HandshakeError(
                f'the server at {self.endpoint} changed: {handshake} (was {self._handshake})'
            )
        lane.handshake = handshake

    @property
    def info(self) -> EngineInfo:
        base = self._handshake.info
        return EngineInfo(
            backend=f'remote:{base.backend}',
            model_name=base.model_name,
            model_hash=base.model_hash,
            action_dim=base.action_dim,
            chunk_length=base.chunk_length,
            flow_steps=base.flow_steps,
            cameras=base.cameras,
            image_hw=base.image_hw,
            supports_guidance_gradients=base.supports_guidance_gradients,  # the server's
        )

    @property
    def control_period_ns(self) -> int:
        return self._handshake.control_period_ns

    # -- requests ---------------------------------------------------------------------------------

    def _observation(self, observation: Observation) -> dict:
        info = self._handshake.info
        images = {}
        for camera in info.cameras:
            if camera not in observation.images:
                raise EngineInputError(f'observation.images: missing camera {camera!r}')
            frame = check_array(
                f'observation.images[{camera!r}]',
                observation.images[camera],
                (None, None, 3),
                np.uint8,
            )
            images[camera] = encode_frame(fit(frame, info.image_hw), self.config.jpeg_quality)
        state = check_array(
            'observation.state', np.asarray(observation.state, np.float32), (None,), np.float32
        )
        return {'stamp_ns': observation.stamp_ns, 'images': images, 'state': encode_array(state)}

    def act(self, observation, reasoning, noise, seam=None) -> ActionResult:
        start = time.perf_counter()
        info = self._handshake.info
        check_array('noise', noise, (info.chunk_length, info.action_dim), np.float32)
        check_seam(seam, info)
        body = {
            'observation': self._observation(observation),
            'reasoning': None
            if reasoning is None
            else protocol.reasoning_body(reasoning, image=False),
            'noise': encode_array(noise),
            'seam': protocol.seam_body(seam),
        }
        encode_ms = (time.perf_counter() - start) * 1e3
        reply, server, rtt_ms = self._lanes['act'].call(
            Op.ACT, body, self.config.act_timeout_s, self._hello
        )
        try:
            actions = protocol.decode_array(
                'actions', reply['actions'], (info.chunk_length, info.action_dim), np.float32
            )
            engine_timings = protocol.fields(
                'timings_ms', reply['timings_ms'], set(), set(reply['timings_ms'])
            )
        except (ProtocolError, KeyError, TypeError) as error:
            raise RemoteError('schema', f'bad act reply: {error}') from None
        timings = {f'server_{k}': float(v) for k, v in engine_timings.items()}
        timings.update(self._transport_timings(server, rtt_ms, encode_ms))
        timings['total'] = (time.perf_counter() - start) * 1e3
        self.last_timings_ms = timings
        return ActionResult(actions, timings)

    def reason(self, observation, instruction, version, *, subgoal=True, max_tokens=64):
        start = time.perf_counter()
        body = {
            'observation': self._observation(observation),
            'instruction': instruction,
            'version': version,
            'subgoal': subgoal,
            'max_tokens': max_tokens,
        }
        encode_ms = (time.perf_counter() - start) * 1e3
        reply, server, rtt_ms = self._lanes['reason'].call(
            Op.REASON, body, self.config.reason_timeout_s, self._hello
        )
        try:
            remote = protocol.parse_reasoning(reply, image=True)
        except ProtocolError as error:
            raise RemoteError('schema', f'bad reason reply: {error}') from None
        timings = {f'server_{k}': v for k, v in remote.timings_ms.items()}
        timings.update(self._transport_timings(server, rtt_ms, encode_ms))
        timings['total'] = (time.perf_counter() - start) * 1e3
        return Reasoning(
            **{k: getattr(remote, k) for k in protocol.REASONING_KEYS},
            subgoal_tokens=remote.subgoal_tokens,
            subgoal_grid=remote.subgoal_grid,
            subgoal_image=remote.subgoal_image,
            timings_ms=timings,
        )

    @staticmethod
    def _transport_timings(server: dict, rtt_ms: float, encode_ms: float) -> dict[str, float]:
        handled = server.get('handled_ms')
        handled = float(handled) if isinstance(handled, int | float) else 0.0
        return {
            'encode': encode_ms,
            'round_trip': rtt_ms,
            'server_handled': handled,
            'server_queue': float(server.get('queue_ms') or 0.0),
            'server_engine': float(server.get('engine_ms') or 0.0),  # the engine call itself
            'network': max(rtt_ms - handled, 0.0),  # wire + client decode + zmq queues
        }

    def health(self) -> dict:
        """The server's health reply (uptime, clients, queue lengths, counts)."""
        body, _, rtt_ms = self._lanes['health'].call(
            Op.HEALTH, {}, self.config.health_timeout_s, self._hello
        )
        return {**body, 'round_trip_ms': rtt_ms}

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()
        self._context.term()


def remote_engine(config, remote: RemoteConfig | None = None) -> RemoteEngine:
    """The client for an `EngineConfig` with backend remote: the server must serve that chunk
    length and those cameras (other remote options, e.g. JPEG and keys, from `remote`)."""
    remote = replace(
        remote or RemoteConfig(), chunk_length=config.chunk_length, cameras=tuple(config.cameras)
    )
    return RemoteEngine(config.server, remote)
