"""The forwarding headers a proxy adds to requests (X-Forwarded-*, Forwarded (RFC 7239), Via), and
the real client's address behind trusted front proxies.

Pure functions over a parsed head and the listener's :class:`ForwardedSpec`. The common request
carries none of these headers, so its lines depend only on the peer's address and the Host:
:class:`ForwardingCache` keeps those ready-made per (peer, host) so the hot path only joins.

The real client
---------------
Behind a front proxy or an ingress, every connection comes from the proxy. With
``forwarded.trusted`` (addresses or CIDR ranges) or ``forwarded.trusted_hops``,
:class:`ClientAddresses` reads the chain the proxies wrote, from the right: X-Forwarded-For in mode
``x-forwarded``, the ``for=`` of each Forwarded element in mode ``forwarded`` (one header, the one
the mode writes: a client cannot pick the other one when the two disagree).

* ``trusted``: only when the direct peer is in a trusted range. Entries that are themselves
  trusted are skipped; the first untrusted one is the client (nginx's ``set_real_ip_from`` with
  ``real_ip_recursive on``); when every entry is trusted, the left-most one.
* ``trusted_hops: N``: N proxies in front, the direct peer the first of them, whatever its address
  (Envoy's ``xff_num_trusted_hops`` with ``use_remote_address``): the client is the Nth entry from
  the right, the one the outermost trusted proxy wrote (N=1: the entry the peer appended).
* An entry that is not an address (``unknown``, an obfuscated ``_hidden``, an empty entry, a zone
  id, garbage) stops the walk, and so does a chain shorter than N: the client is the last address
  read, the peer when none was. Ports and brackets are dropped (``"[2001:db8::1]:4711"`` is
  ``2001:db8::1``), IPv4-mapped IPv6 is IPv4, and addresses are normalised: the client is always
  an address, never text a client chose, and only a caller inside the trusted ranges (a chain
  trusted all the way) can name another one. At most :data:`MAX_ENTRIES` entries are read.
* An untrusted peer is the client, whatever it sends, and with trust configured its forwarding
  headers are not passed on: only a trusted peer's are kept (``trust_incoming``), to which
  Sidegate appends the direct peer as ever.

It runs once per request, only when trust is configured and the request brought a forwarding
header (:meth:`ClientAddresses.client`); the exchange stores the answer in ``head.client_ip``,
which the access log, spans, explain, ``access`` and ``rate_limit`` read. ``head.peer_ip`` keeps
the direct peer (the access log's ``peer``, the X-Forwarded-For appended).
"""

from __future__ import annotations

import ipaddress
from typing import Final

from sidegate.config.snapshot import ForwardedSpec
from sidegate.http.request_head import ParsedRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ENTRIES: Final = 32  # entries read from the right of a chain (config: trusted_hops <= this)
_CHAIN_KEPT: Final = 256  # longer chains are walked each time, never remembered
_OBFUSCATED: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def forwarded_lines(
    spec: ForwardedSpec, head: ParsedRequest, proto: bytes = b"http", trust: bool = True
) -> bytes:
    """Header lines (each ending in CRLF) that tell the app who asked and how. ``trust``: the
    incoming forwarding headers may be kept (``trust_incoming``, and a trusted peer sent them)."""
    ip = head.peer_ip.encode()
    trust = trust and spec.trust_incoming
    lines: list[bytes] = []
    if spec.mode == "x-forwarded":
        xff = head.xff + b", " + ip if trust and head.xff else ip
        lines += (b"X-Forwarded-For: ", xff, b"\r\n")
        lines += (b"X-Forwarded-Proto: ", head.xfp if trust and head.xfp else proto, b"\r\n")
        xfh = head.xfh if trust and head.xfh else head.host_header
        if xfh:
            lines += (b"X-Forwarded-Host: ", xfh, b"\r\n")
        if trust and head.forwarded:
            lines += (b"Forwarded: ", head.forwarded, b"\r\n")
    elif spec.mode == "forwarded":
        node = b'"[' + ip + b']"' if b":" in ip else ip
        element = b"for=" + node + b";proto=" + proto
        if head.host_header:
            element += b';host="' + head.host_header + b'"'
        value = head.forwarded + b", " + element if trust and head.forwarded else element
        lines += (b"Forwarded: ", value, b"\r\n")
        if trust and head.xff:
            lines += (b"X-Forwarded-For: ", head.xff, b"\r\n")
    elif trust:  # "off": pass on what came in, add nothing
        for name, value in (
            (b"X-Forwarded-For", head.xff),
            (b"X-Forwarded-Proto", head.xfp),
            (b"X-Forwarded-Host", head.xfh),
            (b"Forwarded", head.forwarded),
        ):
            if value:
                lines += (name, b": ", value, b"\r\n")
    via = spec.via
    if via:
        lines += (b"Via: ", head.via + b", " + via if head.via else via, b"\r\n")
    elif head.via:
        lines += (b"Via: ", head.via, b"\r\n")
    return b"".join(lines)


def parse_address(text: str) -> Address | None:
    """An IP address as text (IPv4-mapped IPv6 as IPv4); None when it is not one, or has a zone."""
    if not text or text.find("%") >= 0:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def node_address(node: bytes) -> Address | None:
    """The address in an X-Forwarded-For entry or a Forwarded ``for=`` value (unquoted), its port
    and brackets dropped; None for anything else (``unknown``, ``_hidden``, garbage)."""
    text = node.strip(b" \t")
    if text.startswith(b"["):
        end = text.find(b"]")
        if end < 0 or not _port_or_nothing(text[end + 1 :]):
            return None
        text = text[1:end]
        if text.find(b":") < 0:  # brackets hold an IPv6 address only
            return None
    elif text.count(b":") == 1:  # IPv4 with a port (bare IPv6 has two or more)
        text, _, port = text.partition(b":")
        if not _port_or_nothing(b":" + port):
            return None
    ipv4 = _ipv4(text)
    if ipv4 >= 0:  # the common case, without ipaddress's parser (a tenth of the time)
        return ipaddress.IPv4Address(ipv4)
    if not text.isascii():
        return None
    return parse_address(text.decode("ascii"))


def _ipv4(text: bytes) -> int:
    """A dotted-quad IPv4 address as an int; -1 when ``text`` is not one (leading zeros, which
    some parsers read as octal, are not)."""
    parts = text.split(b".")
    if len(parts) != 4:
        return -1
    value = 0
    for part in parts:
        if not part.isdigit() or len(part) > 3 or (len(part) > 1 and part[0] == 48):  # 48: "0"
            return -1
        number = int(part)
        if number > 255:
            return -1
        value = value << 8 | number
    return value


def _port_or_nothing(rest: bytes) -> bool:
    """``rest`` is empty or ``:`` and a port: 1-5 digits, or an obfuscated ``_name`` (RFC 7239)."""
    if not rest:
        return True
    port = rest[1:]
    if rest[0] != 58 or not port:  # 58: ":"
        return False
    if port[0] == 95:  # 95: "_"
        return len(port) > 1 and all(c in _OBFUSCATED for c in port)
    return len(port) <= 5 and port.isdigit()


def forwarded_for(element: bytes) -> bytes | None:
    """The ``for=`` value of one Forwarded element, unquoted; None when it names none, names it
    twice, or any of its pairs is malformed (a quoted value holding ``;`` or ``,`` is split apart
    by the caller and ends up malformed here: no address needs those)."""
    found: bytes | None = None
    for piece in element.split(b";"):
        pair = piece.strip(b" \t")
        if not pair:
            continue  # RFC 7239 allows empty pairs
        name, eq, value = pair.partition(b"=")
        if not eq or not name or name != name.strip(b" \t") or value != value.strip(b" \t"):
            return None
        if value.startswith(b'"'):
            if len(value) < 2 or not value.endswith(b'"'):
                return None
            value = value[1:-1]
            if value.find(b'"') >= 0 or value.find(b"\\") >= 0:  # quoted-pairs: never in an address
                return None
        elif not value or value.find(b'"') >= 0:
            return None
        if name.lower() == b"for":
            if found is not None:
                return None
            found = value
    return found


class ClientAddresses:
    """The real client's address behind trusted proxies (see the module's docstring), computed
    once per (peer, chain): a client sends many requests through the same proxies."""

    __slots__ = ("_clients", "_forwarded", "_hops", "_max", "_networks", "_peers")

    def __init__(self, spec: ForwardedSpec, max_entries: int = 4096) -> None:
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in spec.trusted
        )
        self._hops = spec.trusted_hops
        self._forwarded = spec.mode == "forwarded"
        self._peers: dict[str, bool] = {}  # peer address -> trusted
        self._clients: dict[tuple[str, bytes], str] = {}  # (peer, chain) -> client
        self._max = max_entries

    def trusts(self, peer: str) -> bool:
        """Whether the direct peer may say who the client is (and keep its forwarding headers)."""
        if self._hops:
            return True
        trusted = self._peers.get(peer)
        if trusted is None:
            address = parse_address(peer)
            trusted = address is not None and self._trusted(address)
            if len(self._peers) >= self._max:
                self._peers.clear()
            self._peers[peer] = trusted
        return trusted

    def client(self, head: ParsedRequest) -> str:
        """The request's client address: the direct peer, or who the trusted proxies name."""
        peer = head.peer_ip
        chain = head.forwarded if self._forwarded else head.xff
        if not chain or not self.trusts(peer):
            return peer
        if len(chain) > _CHAIN_KEPT:
            return self._walk(peer, chain)
        key = (peer, chain)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= self._max:
                self._clients.clear()
            client = self._clients[key] = self._walk(peer, chain)
        return client

    def _walk(self, peer: str, chain: bytes) -> str:
        client: Address | None = None  # the last address read
        hops = self._hops
        entries = chain.rsplit(b",", MAX_ENTRIES)
        for count, entry in enumerate(reversed(entries)):
            if count == MAX_ENTRIES:
                break
            node = forwarded_for(entry) if self._forwarded else entry
            address = node_address(node) if node is not None else None
            if address is None:
                break
            client = address
            if hops:
                if count + 1 >= hops:
                    break
            elif not self._trusted(address):
                break
        return peer if client is None else str(client)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self._networks)


class ForwardingCache:
    """Forwarding lines for requests that brought none of their own, per (peer, Host)."""

    __slots__ = ("_lines", "_max", "addresses", "spec")

    def __init__(
        self, spec: ForwardedSpec, addresses: ClientAddresses | None = None, max_entries: int = 4096
    ) -> None:
        self.spec = spec
        self.addresses = addresses  # trust configured: only trusted peers' headers are kept
        self._lines: dict[tuple[str, bytes], bytes] = {}
        self._max = max_entries

    def lines(self, head: ParsedRequest) -> bytes:
        if not head.plain_forwarding:
            addresses = self.addresses
            trust = addresses is None or addresses.trusts(head.peer_ip)
            return forwarded_lines(self.spec, head, trust=trust)
        key = (head.peer_ip, head.host_header)
        lines = self._lines.get(key)
        if lines is None:
            if len(self._lines) >= self._max:
                self._lines.clear()
            lines = self._lines[key] = forwarded_lines(self.spec, head)
        return lines
