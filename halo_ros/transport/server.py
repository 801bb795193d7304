"""The engine server: one ROUTER socket in front of one in-process `Engine`, many robots.

Threads: the I/O thread owns the ROUTER socket; it decodes and validates every frame (a hostile
or broken frame is answered with an error reply right there and never reaches the engine),
answers `hello` and `health` at once, and queues `act` and `reason` in two lanes, each a
`FairQueue` with one worker thread, so a reasoning cycle (~1 s) never delays anyone's action
chunk. Workers hand replies back to the I/O thread over an inproc socket (ZeroMQ sockets are not
shared between threads).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import zmq

from halo_ros.engine.interface import Engine, EngineInputError
from halo_ros.runtime.seam import SeamMode
from halo_ros.transport import protocol
from halo_ros.transport.fair_queue import FairQueue, QueueFull
from halo_ros.transport.protocol import ErrorCode, Op
from halo_ros.transport.security import ServerKeys, check_bind, secure_server
from halo_ros.transport.wire import ProtocolError, WireLimits, pack, unpack

log = logging.getLogger(__name__)

DEFAULT_BIND = 'tcp://127.0.0.1:5555'
_ids = itertools.count()


@dataclass(frozen=True)
class ServerConfig:
    bind: str = DEFAULT_BIND  # 'tcp://127.0.0.1:*' picks a free port (see EngineServer.endpoint)
    keys: ServerKeys | None = None  # required for any non-loopback bind
    limits: WireLimits = field(default_factory=WireLimits)
    control_period_s: float = 0.02  # the dt between chunk actions the model was trained for
    # Per lane, over all clients: decoded requests waiting for the engine. A robot holds at most
    # one queued request per lane; these bound many identities (one per connection) together.
    max_pending_jobs: int = 64
    max_pending_bytes: int = 512 * 1024 * 1024

    def __post_init__(self):
        if self.control_period_s <= 0:
            raise ValueError(f'control_period_s must be positive, got {self.control_period_s}')
        if self.max_pending_jobs < 1 or self.max_pending_bytes < 1:
            raise ValueError('max_pending_jobs and max_pending_bytes must be positive')


@dataclass
class _Job:
    op: Op
    request_id: int
    recv_ns: int
    recv_s: float  # perf_counter at arrival
    decode_ms: float
    request: object  # protocol.ActRequest | protocol.ReasonRequest


class EngineServer:
    def __init__(self, engine: Engine, config: ServerConfig = ServerConfig()):
        check_bind(config.bind, config.keys)
        self.engine = engine
        self.config = config
        self.info = engine.info
        self.counts: Counter[str] = Counter()  # served ops and error codes
        self._lanes = {
            op: FairQueue(config.max_pending_jobs, config.max_pending_bytes)
            for op in (Op.ACT, Op.REASON)
        }
        self._context = zmq.Context()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._reply_endpoint = f'inproc://halo-replies-{next(_ids)}'
        self._threads: list[threading.Thread] = []
        self._started_s = time.monotonic()
        self._seen: dict[bytes, float] = {}  # client identity -> monotonic time last heard
        self._counts_lock = threading.Lock()
        self.endpoint: str | None = None
        self.instance = secrets.token_hex(8)  # tells clients this process from a restarted one
        self._hello = None
        self._auth = None
        self._error: BaseException | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> EngineServer:
        self._hello = protocol.hello_body(
            self.info,
            round(self.config.control_period_s * 1e9),
            self.config.limits.max_message_bytes,
            self.instance,
        )
        io = threading.Thread(target=self._io_loop, name='halo-serve-io', daemon=True)
        self._threads.append(io)
        io.start()
        self._ready.wait(10.0)
        if self._error is not None:
            raise self._error
        for op in self._lanes:
            worker = threading.Thread(
                target=self._work, args=(op,), name=f'halo-serve-{op.value}', daemon=True
            )
            self._threads.append(worker)
            worker.start()
        return self

    def stop(self) -> None:
        """Answer what is still queued with a shutdown error, let running requests finish
        (up to 5 s each), close."""
        self._stop.set()
        for thread in self._threads:  # the I/O thread first: it drains the lanes
            thread.join(5.0)
        if self._auth is not None:
            self._auth.stop()
        if any(thread.is_alive() for thread in self._threads):
            log.warning('an engine call is still running; leaving its socket to process exit')
            return
        self._context.term()

    def request_stop(self) -> None:
        """Safe from a signal handler: wait() returns, then call stop()."""
        self._stop.set()

    def wait(self) -> None:
        """Block until stop() (from a signal handler or another thread)."""
        while not self._stop.wait(0.5):
            pass

    # -- the I/O thread ---------------------------------------------------------------------------

    def _io_loop(self) -> None:
        try:
            router = self._context.socket(zmq.ROUTER)
            router.linger = 0
            # libzmq drops a peer that sends more than this before we see it; between the
            # application limit and this cap the peer gets a clear error reply instead. A small
            # receive queue per peer bounds what one peer can make us buffer (~16 x the cap).
            router.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_message_bytes + (1 << 20))
            router.rcvhwm = 16
            if self.config.keys is not None:
                self._auth = secure_server(router, self._context, self.config.keys)
            router.bind(self.config.bind)
            self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            replies = self._context.socket(zmq.PULL)
            replies.linger = 0
            replies.bind(self._reply_endpoint)
        except Exception as error:  # noqa: BLE001 (reported to start())
            self._error = error
            self._ready.set()
            return
        log.info('serving %s (%s) on %s', self.info.model_name, self.info.backend, self.endpoint)
        self._ready.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(replies, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if replies in events:
                    while True:
                        try:
                            router.send_multipart(replies.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                if router in events:
                    for _ in range(64):  # then look at the replies again
                        try:
                            frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        answer = self._on_frames(frames)
                        if answer is not None:
                            router.send_multipart(answer)
            for lane in self._lanes.values():
                for client, job in lane.drain():
                    router.send_multipart(
                        self._error_frames(client, job, ErrorCode.SHUTDOWN, 'server stopping')
                    )
        finally:
            router.close()
            replies.close()

    def _server_timing(self, recv_ns: int, recv_s: float, **ms) -> dict:
        timing = {'instance': self.instance, 'recv_ns': recv_ns, 'send_ns': time.time_ns()}
        timing['handled_ms'] = (time.perf_counter() - recv_s) * 1e3
        timing.update(ms)
        return timing

    def _on_frames(self, frames) -> list | None:
        """Handle one incoming message; returns reply frames to send now, or None (queued)."""
        recv_ns, recv_s = time.time_ns(), time.perf_counter()
        client = frames[0].bytes
        self._seen[client] = time.monotonic()
        if len(self._seen) > 10_000:  # identities are per connection: forget the long gone
            self._forget_clients()
        message = None
        try:
            if len(frames) != 2:
                raise ProtocolError(
                    'frames', f'expected one frame per request, got {len(frames) - 1}'
                )
            message = unpack(frames[1].buffer, self.config.limits)
            op, request_id, _stamp_ns, body = protocol.parse_request(message)
            if op is Op.HELLO:
                return self._reply(client, op, request_id, self._hello, recv_ns, recv_s)
            if op is Op.HEALTH:
                return self._reply(client, op, request_id, self.health(), recv_ns, recv_s)
            parse = protocol.parse_act if op is Op.ACT else protocol.parse_reason
            parsed = parse(body, self.info)
            if (
                op is Op.ACT
                and parsed.seam is not None
                and parsed.seam.mode is SeamMode.RTC
                and not self.info.supports_guidance_gradients
            ):
                raise ProtocolError(
                    'unsupported',
                    f'seam rtc needs guidance gradients; {self.info.backend} has none',
                )
        except Exception as error:  # noqa: BLE001 (no frame may take the I/O thread down)
            if isinstance(error, ProtocolError):
                code = ErrorCode(error.code)
                log.debug('refused a frame from %s: %s', client.hex(), error)
            else:
                code = ErrorCode.INTERNAL
                log.warning('validating a frame from %s failed', client.hex(), exc_info=True)
                error = f'malformed request ({type(error).__name__})'
            self._count(code.value)
            op_name = message.get('op') if isinstance(message, dict) else None
            reply = protocol.error_reply(
                op_name if isinstance(op_name, str) and len(op_name) < 32 else None,
                protocol.request_id_of(message),
                code,
                str(error),
                self._server_timing(recv_ns, recv_s),
            )
            return [client, pack(reply)]
        decode_ms = (time.perf_counter() - recv_s) * 1e3
        job = _Job(op, request_id, recv_ns, recv_s, decode_ms, parsed)
        try:
            replaced = self._lanes[op].put(client, job, protocol.decoded_bytes(parsed))
        except QueueFull as error:
            return self._error_frames(client, job, ErrorCode.BUSY, f'server busy: {error}')
        if replaced is not None:
            return self._error_frames(
                client, replaced, ErrorCode.SUPERSEDED, f'request {request_id} replaced it'
            )
        return None

    def _reply(self, client, op: Op, request_id: int, body: dict, recv_ns, recv_s) -> list:
        self._count(op.value)
        return [
            client,
            pack(protocol.reply(op.value, request_id, body, self._server_timing(recv_ns, recv_s))),
        ]

    def _error_frames(self, client: bytes, job: _Job, code: ErrorCode, message: str) -> list:
        self._count(code.value)
        timing = self._server_timing(job.recv_ns, job.recv_s, decode_ms=job.decode_ms)
        return [
            client,
            pack(protocol.error_reply(job.op.value, job.request_id, code, message, timing)),
        ]

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self.counts[key] += 1

    def _forget_clients(self, idle_s: float = 60.0) -> None:
        cutoff = time.monotonic() - idle_s
        self._seen = {c: t for c, t in self._seen.items() if t >= cutoff}

    def health(self) -> dict:
        self._forget_clients()
        with self._counts_lock:
            counts = dict(self.counts)
        return {
            'uptime_s': round(time.monotonic() - self._started_s, 3),
            'clients_last_minute': len(self._seen),
            'queued_act': len(self._lanes[Op.ACT]),
            'queued_reason': len(self._lanes[Op.REASON]),
            'running_act': self._lanes[Op.ACT].running(),
            'running_reason': self._lanes[Op.REASON].running(),
            'counts': counts,
        }

    # -- workers ----------------------------------------------------------------------------------

    def _work(self, op: Op) -> None:
        out = self._context.socket(zmq.PUSH)
        out.linger = 0
        out.connect(self._reply_endpoint)
        lane = self._lanes[op]
        try:
            while not self._stop.is_set():
                item = lane.get(timeout_s=0.2)
                if item is None:
                    continue
                client, job = item
                try:
                    out.send_multipart(self._run(client, job))
                finally:
                    lane.done(client)
        finally:
            out.close()

    def _run(self, client: bytes, job: _Job) -> list:
        queue_ms = (time.perf_counter() - job.recv_s) * 1e3 - job.decode_ms
        start = time.perf_counter()
        try:
            body = self._act(job.request) if job.op is Op.ACT else self._reason(job.request)
        except EngineInputError as error:
            return self._error_frames(client, job, ErrorCode.INPUT, str(error))
        except Exception as error:  # noqa: BLE001 (the server outlives a failing request)
            log.warning(
                '%s request %d failed: %r',
                job.op.value,
                job.request_id,
                error,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return self._error_frames(
                client, job, ErrorCode.ENGINE, f'{type(error).__name__}: {error}'
            )
        engine_ms = (time.perf_counter() - start) * 1e3
        self._count(job.op.value)
        timing = self._server_timing(
            job.recv_ns, job.recv_s, decode_ms=job.decode_ms, queue_ms=queue_ms, engine_ms=engine_ms
        )
        return [client, pack(protocol.reply(job.op.value, job.request_id, body, timing))]

    def _act(self, request: protocol.ActRequest) -> dict:
        result = self.engine.act(
            request.observation, request.reasoning, request.noise, request.seam
        )
        return {'actions': result.actions, 'timings_ms': dict(result.timings_ms)}

    def _reason(self, request: protocol.ReasonRequest) -> dict:
        reasoning = self.engine.reason(
            request.observation,
            request.instruction,
            request.version,
            subgoal=request.subgoal,
            max_tokens=request.max_tokens,
        )
        return protocol.reasoning_body(reasoning, image=True)
