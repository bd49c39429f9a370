"""A DNS server of a few lines, on a loopback UDP port, answering A queries for
the names it is given — what a headless Kubernetes Service's DNS record is: one
name, one address per ready replica. A gRPC target names it as its authority:
`dns://127.0.0.1:<port>/<name>:<grpc port>`. Records can change while it runs."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

A, IN = 1, 1


class TinyDns:
    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = {name.lower(): list(ips) for name, ips in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.queries: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tiny-dns", daemon=True)

    def set(self, name: str, ips: list[str]) -> None:
        self.records[name.lower()] = list(ips)

    def __enter__(self) -> TinyDns:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            with contextlib.suppress(IndexError, struct.error, UnicodeDecodeError, OSError):
                self.sock.sendto(self._answer(data), peer)

    def _answer(self, query: bytes) -> bytes:
        (ident,) = struct.unpack(">H", query[:2])
        labels, i = [], 12
        while query[i]:
            labels.append(query[i + 1 : i + 1 + query[i]].decode())
            i += query[i] + 1
        qtype, qclass = struct.unpack(">HH", query[i + 1 : i + 5])
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        known = name in self.records
        ips = self.records.get(name, []) if (qtype, qclass) == (A, IN) else []
        # Response, recursion desired and available; NXDOMAIN for unknown names.
        header = struct.pack(">HHHHHH", ident, 0x8180 | (0 if known else 3), 1, len(ips), 0, 0)
        answers = b"".join(
            b"\xc0\x0c" + struct.pack(">HHIH", A, IN, 1, 4) + socket.inet_aton(ip) for ip in ips
        )
        return header + query[12 : i + 5] + answers
