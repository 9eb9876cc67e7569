"""What both sides of the operator's page share (standard library only: the page's process
loads it by path, page_server.py): the frames on the feed between the daemon and the page's
process, the page's TLS, and how a client's address and Host are read."""
from __future__ import annotations

import ipaddress
import ssl
import struct

FRAME = struct.Struct("!cI")  # a kind byte and the payload's length


def source_of(address: str) -> str:
    """What the per-source cap counts: the address, or its /64 for IPv6 (one host has many)."""
    if ":" not in address:  # IPv4, as the kernel writes it: nothing to parse
        return address
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def loopback_host(value: str | None) -> bool:
    """A Host header naming this machine's loopback: localhost or a loopback address, with any
    port (`ssh -L 8080:127.0.0.1:9109` makes the browser send localhost:8080)."""
    if not value:
        return False
    if value.startswith("["):
        name, _, port = value[1:].partition("]")
        port = port.removeprefix(":") if port.startswith(":") or not port else "x"
    else:
        name, _, port = value.partition(":")
    if port and not port.isdigit():
        return False
    name = name.lower().removesuffix(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def tls_context(cert, key) -> ssl.SSLContext:
    """The page's TLS (OSError or ssl.SSLError if the files cannot be used)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


def frames(buffer: bytearray):
    """The whole frames at the start of `buffer` (taken out of it), as (kind, payload)."""
    while len(buffer) >= FRAME.size:
        kind, size = FRAME.unpack_from(buffer)
        if len(buffer) < FRAME.size + size:
            return
        payload = bytes(buffer[FRAME.size:FRAME.size + size])
        del buffer[:FRAME.size + size]
        yield kind, payload
