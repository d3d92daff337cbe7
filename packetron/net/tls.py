"""Build SSLContexts from certificate and key files, with clear errors for bad paths."""
from __future__ import annotations

import os
import ssl
from collections.abc import Sequence

from packetron.errors import ConfigError

__all__ = ["server_context", "client_context"]

# TLS 1.0/1.1 are deprecated (RFC 8996); nothing older than 1.2 is offered.
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2

PathLike = str | os.PathLike[str]


def _check_file(path: PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"TLS {what} file not found: {path!r}")
    return path


def server_context(
    cert: PathLike,
    key: PathLike | None = None,
    *,
    password: str | None = None,
    client_ca: PathLike | None = None,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """An SSLContext for a server.

    Args:
        cert: PEM certificate chain (leaf first).
        key: PEM private key; None when it is inside `cert`.
        password: the key's password, if it is encrypted.
        client_ca: PEM CA bundle; when given, clients must present a certificate it
            signed (mutual TLS).
        alpn: protocols offered through ALPN, in order of preference ("h2", "http/1.1").

    Returns:
        The context, TLS 1.2 at least.

    Raises:
        ConfigError: a file is missing, or the certificate and key do not load or match.
    """
    cert_path = _check_file(cert, "certificate")
    key_path = _check_file(key, "key") if key is not None else None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = MINIMUM_TLS_VERSION
    try:
        ctx.load_cert_chain(cert_path, key_path, password=password)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load TLS certificate {cert_path!r} with key {key_path!r}: {exc}"
        ) from None
    if client_ca is not None:
        ca_path = _check_file(client_ca, "client CA")
        try:
            ctx.load_verify_locations(ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load client CA {ca_path!r}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_context(
    ca: PathLike | None = None,
    *,
    cert: PathLike | None = None,
    key: PathLike | None = None,
    check_hostname: bool = True,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """An SSLContext for a client.

    Args:
        ca: PEM CA bundle to trust; None trusts the system's default CAs.
        cert, key: a client certificate for mutual TLS.
        check_hostname: verify the server name against its certificate. Turning it off
            still verifies the chain.
        alpn: protocols offered through ALPN.

    Returns:
        The context, TLS 1.2 at least, certificates verified.

    Raises:
        ConfigError: a file is missing or does not load.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = MINIMUM_TLS_VERSION
    if ca is not None:
        ca_path = _check_file(ca, "CA")
        try:
            ctx.load_verify_locations(ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load CA {ca_path!r}: {exc}") from None
    if cert is not None:
        cert_path = _check_file(cert, "certificate")
        key_path = _check_file(key, "key") if key is not None else None
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load client certificate {cert_path!r}: {exc}") from None
    ctx.check_hostname = check_hostname
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx
