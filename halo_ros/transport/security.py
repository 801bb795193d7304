"""Who may talk to the server: loopback by default, CURVE (keys from files) for anything else.

Keys are ZeroMQ certificate files (`zmq.auth.create_certificates`): `<name>.key` holds the public
key (give it to the other side), `<name>.key_secret` both. The server admits only the clients whose
public key files lie in its authorized-keys folder; a client with any other key gets no reply at
all (the ZAP handler drops it during the handshake).
"""

from __future__ import annotations

import ipaddress
import logging
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
    """Create `<name>.key` (public) and `<name>.key_secret` in `folder`; refuses to overwrite."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ('.key', '.key_secret'):
        if (folder / f'{name}{suffix}').exists():
            raise FileExistsError(f'{folder / (name + suffix)} exists; not overwriting a key')
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def load_secret(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a `.key_secret` file."""
    if Path(path).stat().st_mode & 0o077:
        log.warning('%s is readable by other users: chmod 600 it', path)
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
