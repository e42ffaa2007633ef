"""Where a webhook may go: https outside development, and never into the platform's own network.

A webhook URL is chosen by an administrator, and the dispatcher runs inside the platform's
network, next to the database, the broker, cloud metadata services and whatever else answers on
a private address. Without a check, a subscription to ``http://169.254.169.254/latest/meta-data``
or ``http://127.0.0.1:5432`` turns the dispatcher into a request forger (SSRF) that POSTs alert
bodies wherever the URL says, and the attempt log tells the admin what answered.

The rules, checked when a subscription is created or changed (``url_problem``: what can be
decided without DNS) and again on every send (``resolve_destination``):

* the scheme is ``https``, or ``http`` when ``TAGWATCH_ENVIRONMENT=development`` or the host is
  named by the allow-list (``test`` is treated like production: its receivers are allow-listed);
* the host is resolved on every attempt, and the destination is refused when any of its
  addresses is loopback, link-local (169.254.0.0/16 with the cloud metadata address, fe80::/10,
  fd00:ec2::254), private (RFC 1918, fc00::/7), shared/CGNAT (100.64.0.0/10), unspecified,
  multicast, reserved or otherwise not globally routable, including the same addresses written
  as IPv4-mapped (``::ffff:127.0.0.1``), 6to4 or NAT64 IPv6 addresses; unless
* ``TAGWATCH_WEBHOOK_ALLOW_HOSTS`` names the host (exact name or IP) or holds a network
  (CIDR) that contains the address: comma- or space-separated, e.g.
  ``tracing.internal, 10.20.0.0/16, 127.0.0.1``.

The dispatcher then connects to an address it checked here (the URL it sends to carries the
address, not the name), so a DNS answer that changes between the check and the connection
(DNS rebinding) cannot move the request; the name still goes in the ``Host`` header and as the
TLS server name, so certificates are verified against it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from tagwatch.settings import IPNetwork, normal_host, parse_allow_hosts

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

DEVELOPMENT: Final = "development"
METADATA_ADDRESSES: Final = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# Not globally routable, but not all flagged by the ipaddress module of every Python version.
EXTRA_BLOCKED: Final[tuple[tuple[IPNetwork, str], ...]] = (
    (ipaddress.ip_network("100.64.0.0/10"), "shared address space (CGNAT, RFC 6598)"),
    (ipaddress.ip_network("192.0.0.0/24"), "IETF protocol assignments"),
    (ipaddress.ip_network("198.18.0.0/15"), "benchmarking (RFC 2544)"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "local-use NAT64"),
)
NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


class DestinationRefused(Exception):
    """The URL may not be sent to (scheme, or an address it resolves to). Not worth retrying."""


class DestinationUnresolved(Exception):
    """The host did not resolve now (DNS down, no such name): worth retrying later."""


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(normal_host(host))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AllowList:
    """Hosts and networks the operator allows webhooks to reach despite the rules above."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> AllowList:
        """``"name, 10.0.0.0/8 127.0.0.1"`` -> an allow-list; a malformed entry is a ValueError.
        The syntax is settings' (``check-config`` judges the same text without this module)."""
        names, networks = parse_allow_hosts(text)
        return cls(names, networks)

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def allows_address(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in n for a in candidates for n in self.networks if a.version == n.version)

    def names_host(self, host: str) -> bool:
        """The host itself is named: its exact name, or an IP literal inside an entry."""
        literal = _literal(host)
        if literal is not None:
            return self.allows_address(literal)
        return normal_host(host) in self.names


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why the dispatcher must not connect to ``address``; None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner, how = embedded
            reason = forbidden_reason(inner)
            if reason is not None:
                return f"{reason} ({how} form of {inner})"
            if how != "6to4":
                return None  # a public IPv4 address written as IPv6
    if address in METADATA_ADDRESSES:
        return "the cloud metadata address (link-local)"
    for check, reason in (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
    ):
        if check:
            return reason
    for network, reason in EXTRA_BLOCKED:
        if address.version == network.version and address in network:
            return reason
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def _scheme_problem(scheme: str, host: str, environment: str, allow: AllowList) -> str | None:
    if scheme not in {"http", "https"}:
        return "webhook url must be https"
    if scheme == "http" and environment != DEVELOPMENT and not allow.names_host(host):
        return (
            f"webhook url must be https (http only in development; this is {environment}),"
            " unless TAGWATCH_WEBHOOK_ALLOW_HOSTS names the host"
        )
    return None


def url_problem(url: str, environment: str, allow: AllowList) -> str | None:
    """What is wrong with ``url`` as a webhook destination, as far as it shows without DNS:
    scheme, an IP literal that is not public, a ``localhost`` name. None when it may be saved
    (sending still resolves and checks the addresses every time)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        return f"invalid url: {exc}"
    if not host:
        return "webhook url needs a host"
    problem = _scheme_problem(parts.scheme.lower(), host, environment, allow)
    if problem is not None:
        return problem
    if allow.names_host(host):
        return None
    literal = _literal(host)
    if literal is not None:
        reason = forbidden_reason(literal)
        if reason is not None:
            return f"webhook host {literal} is {reason}; the dispatcher does not send there"
    name = normal_host(host)
    if name == "localhost" or name.endswith(".localhost"):
        return f"webhook host {name} is loopback; the dispatcher does not send there"
    return None


@dataclass(frozen=True, slots=True)
class Destination:
    """A webhook URL with the addresses it may be sent to, checked, in the resolver's order."""

    scheme: str
    host: str  # the name: Host header and TLS server name
    port: int
    addresses: tuple[IPAddress, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses as this machine resolves them (getaddrinfo), in its order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        msg = f"cannot resolve {host}: {exc}"
        raise DestinationUnresolved(msg) from exc
    found: list[str] = []
    for info in infos:
        sockaddr: Any = info[4]
        address = str(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


def resolve_destination(
    url: str, environment: str, allow: AllowList, resolver: Resolver = system_resolver
) -> Destination:
    """Resolve ``url``'s host now and check every address; raise ``DestinationRefused`` (with
    the reason) when the URL or any address may not be used, ``DestinationUnresolved`` when
    the name does not resolve at the moment."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        msg = f"invalid url: {exc}"
        raise DestinationRefused(msg) from exc
    if not host:
        msg = "webhook url needs a host"
        raise DestinationRefused(msg)
    problem = _scheme_problem(scheme, host, environment, allow)
    if problem is not None:
        raise DestinationRefused(problem)
    name = normal_host(host)
    named = allow.names_host(host)
    addresses: list[IPAddress] = []
    for text in resolver(name, port):
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        if not named and not allow.allows_address(address):
            reason = forbidden_reason(address)
            if reason is not None:
                shown = name if _literal(name) == address else f"{name} resolves to {address}"
                msg = (
                    f"{shown}, which is {reason}: not sent there unless"
                    " TAGWATCH_WEBHOOK_ALLOW_HOSTS allows it"
                )
                raise DestinationRefused(msg)
        addresses.append(address)
    if not addresses:
        msg = f"{name} resolves to no address"
        raise DestinationUnresolved(msg)
    return Destination(scheme, name, port, tuple(addresses))


__all__ = [
    "AllowList",
    "Destination",
    "DestinationRefused",
    "DestinationUnresolved",
    "forbidden_reason",
    "resolve_destination",
    "system_resolver",
    "url_problem",
]
