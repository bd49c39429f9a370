"""Throwaway certificates for TLS tests, made with the `openssl` command.

`make_ca` creates a self-signed CA; `CertificateAuthority.issue` a leaf
certificate it signs, for a server (SANs localhost and 127.0.0.1) or a client.
Keys are P-256 (fast to generate); everything lives a day.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def need_openssl() -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateAuthority:
    name: str
    cert: Path
    key: Path

    def issue(self, name: str, *, client: bool = False, dest: Path | None = None) -> Leaf:
        """A certificate signed by this CA: a server's for localhost and 127.0.0.1,
        or (client=True) a client's."""
        dest = dest or self.cert.parent
        dest.mkdir(parents=True, exist_ok=True)
        key, csr, cert = dest / f"{name}.key", dest / f"{name}.csr", dest / f"{name}.crt"
        ext = dest / f"{name}.ext"
        if client:
            ext.write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
        else:
            ext.write_text(
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
            cwd=dest,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext),
            cwd=dest,
        )  # fmt: skip
        return Leaf(cert=cert, key=key)


def make_ca(dest: Path, name: str = "ragmesh-test-ca") -> CertificateAuthority:
    need_openssl()
    dest.mkdir(parents=True, exist_ok=True)
    cert, key = dest / f"{name}.crt", dest / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=dest,
    )  # fmt: skip
    return CertificateAuthority(name, cert, key)
