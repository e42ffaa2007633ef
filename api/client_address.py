"""Which address a request comes from, for per-address login throttling.

By default the socket peer: the one thing a client cannot choose freely. ``X-Forwarded-For`` is
read only when the peer is one of the reverse proxies named in ``TAGWATCH_TRUSTED_PROXIES``
(addresses or CIDR ranges, comma-separated); otherwise anyone could send a fresh header with every
guess and never be counted twice. Behind trusted proxies the client is the right-most address of
the header that is not itself a trusted proxy (left of it, everything was written by the client).

An IPv6 client is keyed by its /64 prefix: a single host usually holds a whole /64 and could
otherwise take a fresh address for every guess.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def parse_trusted_proxies(value: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 192.168.0.0/16"`` -> networks; ValueError names a malformed entry."""
    networks = []
    for item in value.split(","):
        text = item.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            msg = f"TAGWATCH_TRUSTED_PROXIES: {text!r} is not an address or CIDR range"
            raise ValueError(msg) from exc
    return tuple(networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: tuple[Network, ...]
) -> bool:
    return address is not None and any(address in network for network in proxies)


def throttle_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The key an address is counted under: itself (IPv4) or its /64 (IPv6)."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_address(connection: HTTPConnection, trusted_proxies: str) -> str:
    """The throttling key of the client behind this request (see the module docstring)."""
    peer_text = connection.client.host if connection.client else ""
    peer = _ip(peer_text)
    proxies = parse_trusted_proxies(trusted_proxies)
    client = peer
    if _trusted(peer, proxies):
        hops = [h for v in connection.headers.getlist("x-forwarded-for") for h in v.split(",")]
        for hop in reversed(hops):
            address = _ip(hop)
            if address is None:
                break  # garbage written by the client: stop at the last proxy we trust
            client = address
            if not _trusted(address, proxies):
                break
    if client is None:
        return peer_text or "unknown"  # not an IP socket (e.g. a test transport)
    return throttle_key(client)
