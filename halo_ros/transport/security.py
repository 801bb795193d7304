"""Who may talk to the server: loopback by default, CURVE (keys from files) for anything else.

Keys are ZeroMQ certificate files (`zmq.auth.create_certificates`): `<name>.key` holds the public
key (give it to the other side), `<name>.key_secret` both. The server admits only the clients whose
public key files lie in its authorized-keys folder; a client with any other key gets no reply at
all (the ZAP handler drops it during the handshake).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

log = logging.getLogger(__name__)


def is_loopback(endpoint: str) -> bool:
    """True for tcp on 127.0.0.0/8, ::1 or localhost, and for ipc/inproc (never leave the host)."""
    transport, _, rest = endpoint.partition('://')
    if transport in ('ipc', 'inproc'):
        return True
    if transport != 'tcp':
        return False
    host = rest.rsplit(':', 1)[0].strip('[]')
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name, a host name: may be reachable from outside
        return False


def make_keys(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Create `<name>.key` (public) and `<name>.key_secret` (mode 600 from its creation: no
    moment where another user could read it) in `folder`; refuses to overwrite."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = folder / f'{name}.key', folder / f'{name}.key_secret'
    for path in (public_path, secret_path):
        if path.exists():
            raise FileExistsError(f'{path} exists; not overwriting a key')
    public, secret = zmq.curve_keypair()
    _write_certificate(secret_path, public, secret, mode=0o600)
    _write_certificate(public_path, public, None, mode=0o644)
    return public_path, secret_path


def _write_certificate(path: Path, public: bytes, secret: bytes | None, *, mode: int) -> None:
    """A ZeroMQ certificate file (the ZPL layout `zmq.auth.load_certificate` reads), created
    exclusively with `mode` (the process umask can only narrow it)."""
    kind = 'Secret' if secret is not None else 'Public'
    lines = [
        f'#   ****  Generated on {datetime.datetime.now():%Y-%m-%d %H:%M:%S} by halo_ros  ****',
        f'#   ZeroMQ CURVE **{kind}** Certificate',
        '#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.'
        if secret is not None
        else '#   Exchange securely, or use a secure mechanism to verify the contents.',
        '',
        'metadata',
        'curve',
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, 'w', encoding='ascii') as f:
        f.write('\n'.join(lines) + '\n')


def load_secret(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a `.key_secret` file, which only its owner may read."""
    mode = Path(path).stat().st_mode
    if mode & 0o077:
        raise PermissionError(
            f'{path} is readable by other users (mode {mode & 0o777:o}): a secret key anyone can '
            f'read is no secret; chmod 600 {path} (or make a new pair with `halo-ros keys`)'
        )
    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:
        raise ValueError(f'{path} holds no secret key (use the .key_secret file)')
    return public, secret


def load_public(path: str | Path) -> bytes:
    public, _ = zmq.auth.load_certificate(str(path))
    return public


@dataclass(frozen=True)
class ServerKeys:
    secret_file: str  # the server's .key_secret
    authorized_dir: str  # folder of client .key files allowed in


@dataclass(frozen=True)
class ClientKeys:
    secret_file: str  # this client's .key_secret (its .key must be in the server's folder)
    server_public_file: str  # the server's .key


def check_bind(endpoint: str, keys: ServerKeys | None) -> None:
    if keys is None and not is_loopback(endpoint):
        raise PermissionError(
            f'refusing to bind {endpoint} without CURVE keys: anything beyond loopback needs '
            '--server-key and --authorized-keys (create them with `halo-ros keys`)'
        )


def check_connect(endpoint: str, keys: ClientKeys | None, *, insecure: bool = False) -> None:
    """The client's side of check_bind: plaintext leaves this host only when asked for."""
    if keys is None and not insecure and not is_loopback(endpoint):
        raise PermissionError(
            f'refusing to send plaintext to {endpoint}: beyond loopback use CURVE keys '
            '(server_key and client_key, made with `halo-ros keys`), or set insecure to accept '
            'that anyone on the network can read and forge the traffic'
        )


def secure_server(socket: zmq.Socket, context: zmq.Context, keys: ServerKeys):
    """Make `socket` a CURVE server admitting the authorized keys; returns the authenticator
    (stop it when the socket closes)."""
    from zmq.auth.thread import ThreadAuthenticator

    folder = Path(keys.authorized_dir)
    if not folder.is_dir() or not any(folder.glob('*.key')):
        raise ValueError(f'authorized keys folder {folder} holds no .key files')
    auth = ThreadAuthenticator(context, log=logging.getLogger('halo_ros.transport.zap'))
    auth.start()
    auth.configure_curve(domain='*', location=str(folder))
    public, secret = load_secret(keys.secret_file)
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.curve_server = True
    return auth


def secure_client(socket: zmq.Socket, keys: ClientKeys) -> None:
    public, secret = load_secret(keys.secret_file)
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.curve_serverkey = load_public(keys.server_public_file)
