"""A real DNS server on a loopback port for the egress tests (the resolver's and the listener's):
authoritative for whatever the test puts in ``records``, in threads, on dnspython's message API."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


@dataclass
class StubDNS:
    """An authoritative DNS server on 127.0.0.1 (UDP and TCP on one port), in threads, built on
    dnspython's message API.

    ``records[(name, type)] = (ttl, [values])`` with type "A", "AAAA" or "CNAME" (one target); a name
    with no record at all is NXDOMAIN. ``silent`` makes it read queries and answer none;
    ``delays[name]`` holds the answer to ``name`` back that many seconds;
    ``truncate`` answers every UDP query with TC set and no records (the client must retry over
    TCP); ``servfail`` answers SERVFAIL. ``queries`` records every ``(name, type)`` asked, in order;
    ``tcp_queries`` those over TCP."""

    records: dict[tuple[str, str], tuple[int, list[str]]] = field(default_factory=dict)
    silent: bool = False
    truncate: bool = False
    servfail: bool = False
    delays: dict[str, float] = field(default_factory=dict)
    queries: list[tuple[str, str]] = field(default_factory=list)
    tcp_queries: list[tuple[str, str]] = field(default_factory=list)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):  # one port number free for both protocols
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.bind((self.host, 0))
            self.port: int = self.listener.getsockname()[1]
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                self.sock.bind((self.host, self.port))
                break
            except OSError:
                self.listener.close()
                self.sock.close()
        self.listener.listen()
        self.listener.settimeout(0.1)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._serve_udp, self._serve_tcp)]
        for thread in self._threads:
            thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def asked(self, name: str) -> int:
        return sum(1 for asked, _ in self.queries if asked == name)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.sock.close()
        self.listener.close()

    def _receive(self, wire: bytes, tcp: bool) -> dns.message.Message | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        asked = (name, dns.rdatatype.to_text(question.rdtype))
        self.queries.append(asked)
        if tcp:
            self.tcp_queries.append(asked)
        if self.silent:
            return None
        if name in self.delays:
            time.sleep(self.delays[name])
        if self.servfail:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if self.truncate and not tcp:
            response = dns.message.make_response(query)
            response.flags |= dns.flags.TC
            return response
        return self._answer(query, name, question.rdtype)

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            response = self._receive(wire, tcp=False)
            if response is not None:
                self.sock.sendto(response.to_wire(), peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    size = int.from_bytes(conn.recv(2), "big")
                    wire = b""
                    while len(wire) < size:
                        wire += conn.recv(size - len(wire))
                except OSError:
                    continue
                response = self._receive(wire, tcp=True)
                if response is not None:
                    answer = response.to_wire()
                    conn.sendall(len(answer).to_bytes(2, "big") + answer)

    def _answer(self, query: dns.message.Message, name: str, rdtype: int) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        wanted = dns.rdatatype.to_text(rdtype)
        if not any(key[0] == name for key in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        while (name, "CNAME") in self.records:  # follow the chain inside this zone, as a server does
            ttl, (target,) = self.records[(name, "CNAME")]
            response.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "CNAME", target + "."))
            name = target
        if (name, wanted) in self.records:
            ttl, values = self.records[(name, wanted)]
            response.answer.append(dns.rrset.from_text_list(name + ".", ttl, "IN", wanted, values))
        return response
