"""Opening a handler's port, and giving it a new manifest policy while it serves.

TCP ports are served by a `TcpServer` (the same listener and screening as everywhere
else); UDP ports by a datagram endpoint whose datagrams are screened per source. A new
policy for a TCP port starts a new TcpServer that takes over the old one's socket, so
the port never closes; live connections stay with the listener they came in on.
"""
from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import fields
from typing import Any

from packetron.errors import ConfigError
from packetron.net.broker.runtime import DatagramProtocol, PortEntry, broker_log
from packetron.net.listener import bind_udp_socket, start_udp_listener
from packetron.net.manifest import HandlerPolicy
from packetron.net.screening import Screen
from packetron.net.tcpserver import TcpServer
from packetron.net.tls import server_context

__all__ = ["open_listener", "tcp_server", "udp_screen", "apply_policy", "close_retired",
           "STOP_TIMEOUT_SECONDS"]

# stop(): seconds connections and handler tasks get before they are aborted / cancelled.
STOP_TIMEOUT_SECONDS = 5.0

Spawn = Callable[[Coroutine[Any, Any, None]], None]


async def open_listener(entry: PortEntry, host: str, defaults: HandlerPolicy) -> None:
    """Open entry's port under entry.policy; sets entry.server or entry.transport.

    Raises:
        OSError: the port cannot be bound (in use, no permission).
        ConfigError: the TLS files cannot be loaded.
    """
    e = entry.entry
    if e.protocol == "tcp":
        server = tcp_server(entry, host, entry.policy)
        await server.listen()
        entry.server = server
        return
    entry.screen = udp_screen(entry, entry.policy, defaults)
    sock = bind_udp_socket(host, e.port)
    try:
        transport, _ = await start_udp_listener(lambda: DatagramProtocol(entry), sock)
    except BaseException:
        sock.close()
        raise
    entry.transport = transport


def tcp_server(entry: PortEntry, host: str, p: HandlerPolicy) -> TcpServer:
    """A TcpServer for entry's port under policy p, not yet listening.

    Raises:
        ConfigError: the TLS files cannot be loaded.
    """
    server = TcpServer(
        entry.entry.port,
        host,
        ssl=server_context(p.tls_cert, p.tls_key) if p.tls_cert else None,
        allow=p.allow,
        deny=p.deny,
        max_connections=p.max_connections,
        max_connections_per_ip=p.max_connections_per_ip,
        rate=p.rate,
        idle_timeout=p.idle_timeout,
    )
    server.on_connection(entry.dispatch)
    server._on_closed = entry.connection_closed
    server.on_error(entry.handler_failed)
    return server


def udp_screen(entry: PortEntry, p: HandlerPolicy, defaults: HandlerPolicy) -> Screen | None:
    """The datagram screen for policy p (None: nothing to check).

    `defaults` is the manifest's "*" table: values inherited from it are not this
    handler's doing, so only the handler's own TCP-only settings are warned about.
    """
    d = defaults
    if (p.tls_cert, p.max_connections, p.max_connections_per_ip, p.idle_timeout) != (
        d.tls_cert, d.max_connections, d.max_connections_per_ip, d.idle_timeout
    ):
        broker_log.warning("%s: tls, max_connections* and idle_timeout do not apply to UDP; "
                           "ignored", entry.filename)
    screen = Screen(allow=p.allow, deny=p.deny, rate=p.rate)
    return None if screen.is_noop else screen


async def apply_policy(entry: PortEntry, policy: HandlerPolicy, host: str,
                       defaults: HandlerPolicy, spawn: Spawn) -> None:
    """Give entry's new connections (or datagrams) a new policy; live ones keep theirs.

    A policy that cannot be applied (TLS files missing, say) is logged and the
    previous one stays.
    """
    if entry.entry.protocol == "udp":
        entry.screen = udp_screen(entry, policy, defaults)
    else:
        old = entry.server
        assert old is not None
        try:
            server = tcp_server(entry, host, policy)
            # The new listener takes over the old one's socket: the port is never closed.
            await server.take_over(old)
        except (ConfigError, OSError, RuntimeError) as exc:
            broker_log.error("%s: new manifest policy not applied, the previous one stays: %s",
                             entry.filename, exc)
            return
        entry.server = server
        entry.retired.append(old)
        spawn(close_retired(entry, old))
    changed = [f.name for f in fields(HandlerPolicy)
               if getattr(policy, f.name) != getattr(entry.policy, f.name)]
    entry.policy = policy
    broker_log.info("%s: manifest policy changed (%s); applies to new %s", entry.filename,
                    ", ".join(changed), "connections" if entry.entry.protocol == "tcp"
                    else "datagrams")


async def close_retired(entry: PortEntry, server: TcpServer) -> None:
    """Close a replaced listener once the last connection it accepted has ended."""
    # No grace period: a policy change never cuts a connection. A TLS handshake under
    # way when the listener was replaced may still add one, hence the loop.
    while server.connections:
        await server.wait_idle()
    # Listed until closed, so that stop() closes it too if it comes first.
    await server.close(STOP_TIMEOUT_SECONDS)
    if server in entry.retired:
        entry.retired.remove(server)
