"""Server certificates from files, checked and re-read when they change.

A server that serves TLS names a certificate chain, its private key and,
for mutual TLS, a CA bundle its clients' certificates must chain to. The
files are read and checked at startup (a missing file, a key that does not
match the certificate, or a PEM without a certificate stops the server with
BAD_TLS_CONFIG), and re-read when one of them changes (mtime, size or inode,
looked at most every `reload_interval_s`), so that a renewed certificate
(cert-manager rewrites the mounted Secret) is served to new connections
without a restart. A broken new pair is logged and the previous one kept.

No grpc here: services/common/server.py turns the material into credentials.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument

log = logging.getLogger("ragmesh.tls")

_FileSignature = tuple[int, int, int, int] | None


@dataclass(frozen=True)
class ServerTLS:
    """Where a server's TLS material lives."""

    cert_file: str
    key_file: str
    #: CA bundle for client certificates (mutual TLS); empty: clients need none
    client_ca_file: str = ""
    reload_interval_s: float = 10.0

    @classmethod
    def from_files(
        cls,
        cert_file: str,
        key_file: str,
        client_ca_file: str = "",
        reload_interval_s: float = 10.0,
        what: str = "RAGMESH_GATEWAY_TLS",
    ) -> ServerTLS | None:
        """None when neither file is named; both or neither, else BAD_TLS_CONFIG."""
        if not cert_file and not key_file:
            if client_ca_file:
                raise InvalidArgument(
                    f"{what}_CLIENT_CA_FILE needs {what}_CERT_FILE and {what}_KEY_FILE",
                    reason="BAD_TLS_CONFIG",
                )
            return None
        if not (cert_file and key_file):
            raise InvalidArgument(
                f"TLS needs both {what}_CERT_FILE and {what}_KEY_FILE", reason="BAD_TLS_CONFIG"
            )
        return cls(cert_file, key_file, client_ca_file, reload_interval_s)


@dataclass(frozen=True)
class TLSMaterial:
    """PEM bytes as gRPC wants them."""

    private_key: bytes
    certificate_chain: bytes
    client_ca: bytes | None


def _signature(path: str) -> _FileSignature:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes Secret volume swaps ..data
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(
            f"cannot read the TLS {what} {path}: {exc.strerror or exc}", reason="BAD_TLS_CONFIG"
        ) from exc


def load_material(tls: ServerTLS) -> TLSMaterial:
    """Read and check the files: a certificate, its matching key, a usable CA bundle."""
    chain = _read(tls.cert_file, "certificate")
    key = _read(tls.key_file, "private key")
    if b"-----BEGIN CERTIFICATE-----" not in chain:
        raise InvalidArgument(f"{tls.cert_file} holds no PEM certificate", reason="BAD_TLS_CONFIG")
    if b"PRIVATE KEY-----" not in key:
        raise InvalidArgument(f"{tls.key_file} holds no PEM private key", reason="BAD_TLS_CONFIG")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidArgument(
            f"the TLS key {tls.key_file} does not fit the certificate {tls.cert_file}: {exc}",
            reason="BAD_TLS_CONFIG",
        ) from exc
    client_ca = None
    if tls.client_ca_file:
        client_ca = _read(tls.client_ca_file, "client CA bundle")
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument(
                f"the client CA bundle {tls.client_ca_file} is unusable: {exc}",
                reason="BAD_TLS_CONFIG",
            ) from exc
    # The files may have changed between the reads and the check: read again, and
    # accept only a stable pair.
    if _read(tls.cert_file, "certificate") != chain or _read(tls.key_file, "key") != key:
        raise InvalidArgument(
            "the TLS files changed while being read; try again", reason="BAD_TLS_CONFIG"
        )
    return TLSMaterial(private_key=key, certificate_chain=chain, client_ca=client_ca)


class CertificateFiles:
    """The current TLS material, re-read when the files change."""

    def __init__(self, tls: ServerTLS, clock: Callable[[], float] = time.monotonic) -> None:
        self.tls = tls
        self._clock = clock
        self._signatures = self._current_signatures()
        self.material = load_material(tls)  # raises at startup: no server without TLS
        self._next_check = clock() + tls.reload_interval_s
        self.reloads = 0

    def _paths(self) -> tuple[str, ...]:
        files = (self.tls.cert_file, self.tls.key_file, self.tls.client_ca_file)
        return tuple(p for p in files if p)

    def _current_signatures(self) -> tuple[_FileSignature, ...]:
        return tuple(_signature(p) for p in self._paths())

    def changed_material(self) -> TLSMaterial | None:
        """New material when the files changed since the last look and hold a good
        pair; None otherwise (unchanged, looked too recently, or broken: logged)."""
        if self.tls.reload_interval_s <= 0:
            return None
        now = self._clock()
        if now < self._next_check:
            return None
        self._next_check = now + self.tls.reload_interval_s
        signatures = self._current_signatures()
        if signatures == self._signatures:
            return None
        try:
            material = load_material(self.tls)
        except InvalidArgument as exc:
            # Remember the broken state so it is logged once, not on every connection;
            # a later change is looked at again.
            self._signatures = signatures
            log.error("TLS certificate not reloaded, the previous one stays: %s", exc.message)
            return None
        self._signatures = signatures
        self.material = material
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.tls.cert_file)
        return material
