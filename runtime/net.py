"""Binding the address a server listens on, before it says it serves.

Shared by ``gtc serve`` (uvicorn takes the bound sockets) and ``gtc tritonserver`` (the port is
checked free before the server starts: Triton binds it only after loading every model, and a
server already on that port would answer the readiness poll in its stead)."""

from __future__ import annotations

import socket

from runtime.errors import AddressError


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """TCP sockets bound to every address ``host`` resolves to (as asyncio's ``create_server`` binds
    them), for uvicorn to serve on. Bound before anything is printed, so an unresolvable host or a
    port in use is one :class:`AddressError` rather than uvicorn's log line and exit code 3 after
    ``gtc serve`` already said it was serving."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as e:  # gaierror; UnicodeError: a name IDNA cannot encode
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise AddressError(f"cannot listen on {where}: the host does not resolve ({reason})") from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and len(infos) > 1:  # as asyncio: leave IPv4 to its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
    except OSError as e:
        for sock in socks:
            sock.close()
        raise AddressError(f"cannot listen on {where}: {e.strerror or e}") from None
    return socks


def check_port_free(host: str, port: int) -> None:
    """:class:`AddressError` if ``host:port`` cannot be listened on now (taken, or the host does not
    resolve)."""
    for sock in listen_sockets(host, port):
        sock.close()
