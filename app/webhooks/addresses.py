"""Where a webhook may be sent: http(s) URLs whose every resolved address is public, or allowed by a setting.

A subscription's host is resolved when it is created or changed (422 when any address is refused) and again
before every attempt: a name that later resolves to an internal address (DNS rebinding, a record changed to
127.0.0.1 or 169.254.169.254) is refused then, and the connection goes to the very address that was checked,
not to whatever a second resolution would give."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


class AddressRefused(Exception):
    """The URL cannot be sent to; the message says why (no personal data: a URL and an address)."""


@dataclass(frozen=True)
class Target:
    """A URL checked: its scheme, host (as written), port and path, and the addresses it resolved to."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    def url_for(self, url: str, address: str) -> str:
        """`url` with its host replaced by `address` (bracketed when IPv6): the connection goes there."""
        parts = urlsplit(url)
        literal = f"[{address}]" if ":" in address else address
        netloc = f"{literal}:{self.port}"
        return parts._replace(netloc=netloc).geturl()

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address of `host` (A and AAAA), as the system resolves it."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def allowed(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    """A public address (`is_global`, not multicast), or one inside a network the setting allows. An IPv6
    address mapping an IPv4 one is judged as that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in networks):
        return True
    return address.is_global and not address.is_multicast


def split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL; AddressRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("the URL must start with https:// or http://")
    if not parts.hostname:
        raise AddressRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("the URL must not carry credentials")
    if parts.fragment:
        raise AddressRefused("the URL must not have a fragment")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check(url: str, networks: Sequence[IPNetwork], resolve: Resolver = system_resolver) -> Target:
    """The URL's target, every address of which is allowed; AddressRefused otherwise."""
    scheme, host, port = split(url)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise AddressRefused(f"{host} does not resolve ({type(exc).__name__})") from None
        if not addresses:
            raise AddressRefused(f"{host} does not resolve")
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise AddressRefused(f"{host} resolves to {text}, not an IP address") from None
        if not allowed(address, networks):
            shown = host if literal is not None else f"{host} resolves to {address}, which"
            raise AddressRefused(
                f"{shown} is an internal address (loopback, private, link-local or reserved): not allowed"
            )
    return Target(scheme=scheme, host=host, port=port, addresses=tuple(addresses))
