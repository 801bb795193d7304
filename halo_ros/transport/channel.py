"""One request/reply channel to the engine server: a DEALER socket, one request at a time.

On a timeout, a send that finds no server, or an unreadable reply the socket is thrown away (a
late reply can never be taken for a new one; ids are checked as well), the call raises
`RemoteUnavailable`, and the channel waits a backoff (doubling up to `max_backoff_s`) before it
connects again; a new connection first runs the caller's handshake.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING

import zmq

from halo_ros.transport import protocol
from halo_ros.transport.protocol import Handshake, Op
from halo_ros.transport.security import secure_client
from halo_ros.transport.wire import ProtocolError, pack, unpack

if TYPE_CHECKING:
    from halo_ros.transport.client import RemoteConfig

log = logging.getLogger(__name__)


class HandshakeError(RuntimeError):
    """The server runs something other than what this robot expects."""


class RemoteError(RuntimeError):
    """The server answered with an error (`code` is a protocol ErrorCode value)."""

    def __init__(self, code: str, message: str):
        super().__init__(f'server error {code}: {message}')
        self.code = code


class RemoteUnavailable(RuntimeError):
    """No reply in time, or no server to send to (it is being retried with backoff)."""


class Lane:
    """One DEALER socket, one request at a time, reconnect with backoff."""

    def __init__(self, name: str, context: zmq.Context, endpoint: str, config: RemoteConfig):
        self.name = name
        self._context = context
        self._endpoint = endpoint
        self._config = config
        self._lock = threading.Lock()
        self._socket: zmq.Socket | None = None
        self._ids = itertools.count(1)
        self._backoff_s = 0.0
        self._next_try_s = 0.0
        self.handshake: Handshake | None = None  # of the current connection
        self.stale_replies = 0
        self._lost = False  # log the loss and the return of the server once each

    def _open(self) -> zmq.Socket:
        socket = self._context.socket(zmq.DEALER)
        socket.linger = 0
        socket.immediate = True  # never queue for a connection that is not up
        socket.sndhwm = socket.rcvhwm = 4
        socket.reconnect_ivl = 100
        socket.reconnect_ivl_max = round(self._config.max_backoff_s * 1000)
        socket.setsockopt(zmq.MAXMSGSIZE, self._config.limits.max_message_bytes)
        if self._config.keys is not None:
            secure_client(socket, self._config.keys)
        socket.connect(self._endpoint)
        return socket

    def close(self) -> None:
        with self._lock:  # after a call in flight ends
            self.reset()

    def reset(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
        self._socket = None
        self.handshake = None

    def _back_off(self) -> None:
        self.reset()
        self._backoff_s = min(
            max(self._backoff_s * 2, self._config.min_backoff_s), self._config.max_backoff_s
        )
        self._next_try_s = time.monotonic() + self._backoff_s

    def _fail(self, message: str) -> RemoteUnavailable:
        self._back_off()
        (log.debug if self._lost else log.warning)(
            '%s lane lost %s: %s; retrying with backoff up to %.1f s',
            self.name,
            self._endpoint,
            message,
            self._config.max_backoff_s,
        )
        self._lost = True
        return RemoteUnavailable(f'{self._endpoint} ({self.name}): {message}')

    def call(
        self, op: Op, body: dict, timeout_s: float, on_connect=None
    ) -> tuple[dict, dict, float]:
        """(reply body, server timing, round trip ms); on_connect(lane) runs the handshake of a
        new connection first. Raises RemoteUnavailable, RemoteError or HandshakeError."""
        with self._lock:
            wait_s = self._next_try_s - time.monotonic()
            if wait_s > 0:
                raise RemoteUnavailable(
                    f'{self._endpoint} ({self.name}): backing off, next try in {wait_s:.2f} s'
                )
            try:
                if self._socket is None:
                    self._socket = self._open()
                    if on_connect is not None:
                        on_connect(self)
                body, server, rtt_ms = self.exchange(op, body, timeout_s)
                if (
                    on_connect is not None
                    and self.handshake is not None
                    and server.get('instance') != self.handshake.instance
                ):
                    on_connect(self)  # a restarted server behind ZeroMQ's own reconnect
                return body, server, rtt_ms
            except HandshakeError:
                if self._socket is not None:  # refused, not lost: back off all the same
                    self._back_off()
                raise

    def exchange(self, op: Op, body: dict, timeout_s: float) -> tuple[dict, dict, float]:
        """One request on the open socket (no backoff, no handshake: handshakes use it)."""
        socket = self._socket
        request_id = next(self._ids)
        start = time.perf_counter()
        deadline = start + timeout_s
        frame = pack(protocol.request(op, request_id, time.time_ns(), body))
        if not socket.poll(round(timeout_s * 1000), zmq.POLLOUT):
            raise self._fail(f'no server to send {op.value} to within {timeout_s:g} s')
        socket.send(frame, zmq.NOBLOCK, copy=False)
        while True:
            remaining_ms = (deadline - time.perf_counter()) * 1000
            if remaining_ms <= 0 or not socket.poll(max(1, round(remaining_ms)), zmq.POLLIN):
                raise self._fail(f'no reply to {op.value} {request_id} within {timeout_s:g} s')
            try:
                message = unpack(socket.recv(copy=False).buffer, self._config.limits)
            except ProtocolError as error:
                raise self._fail(f'unreadable reply: {error}') from None
            if message.get('id') != request_id:  # a late reply to an abandoned request
                self.stale_replies += 1
                continue
            break
        rtt_ms = (time.perf_counter() - start) * 1e3
        self._backoff_s = 0.0
        if self._lost:
            log.info('%s lane: %s answers again', self.name, self._endpoint)
            self._lost = False
        server = message.get('server') if isinstance(message.get('server'), dict) else {}
        if not message.get('ok'):
            error = message.get('error') or {}
            raise RemoteError(str(error.get('code')), str(error.get('message')))
        return message.get('body'), server, rtt_ms
