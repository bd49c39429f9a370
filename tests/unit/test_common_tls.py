"""Server certificates from files: checked at startup, re-read when they change,
a broken new pair ignored (certificates made with openssl in the test)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.common.tls import CertificateFiles, ServerTLS, load_material
from tests.support.certs import CertificateAuthority, make_ca


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


def test_from_files() -> None:
    assert ServerTLS.from_files("", "") is None
    assert ServerTLS.from_files("c.pem", "k.pem") == ServerTLS("c.pem", "k.pem")
    for cert, key, client_ca in (("c.pem", "", ""), ("", "k.pem", ""), ("", "", "ca.pem")):
        with pytest.raises(InvalidArgument) as exc:
            ServerTLS.from_files(cert, key, client_ca)
        assert exc.value.reason == "BAD_TLS_CONFIG"


def test_a_good_pair_loads(ca: CertificateAuthority, tmp_path: Path) -> None:
    leaf = ca.issue("server", dest=tmp_path)
    material = load_material(ServerTLS(str(leaf.cert), str(leaf.key), str(ca.cert)))
    assert material.certificate_chain == leaf.cert.read_bytes()
    assert material.private_key == leaf.key.read_bytes()
    assert material.client_ca == ca.cert.read_bytes()


def test_bad_files_stop_startup(ca: CertificateAuthority, tmp_path: Path) -> None:
    one, two = ca.issue("one", dest=tmp_path), ca.issue("two", dest=tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate")
    cases = {
        "missing cert": ServerTLS(str(tmp_path / "absent.crt"), str(one.key)),
        "missing key": ServerTLS(str(one.cert), str(tmp_path / "absent.key")),
        "not PEM": ServerTLS(str(text), str(one.key)),
        "key is a cert": ServerTLS(str(one.cert), str(one.cert)),
        "another key": ServerTLS(str(one.cert), str(two.key)),
        "bad client CA": ServerTLS(str(one.cert), str(one.key), str(text)),
    }
    for what, tls in cases.items():
        with pytest.raises(InvalidArgument) as exc:
            load_material(tls)
        assert exc.value.reason == "BAD_TLS_CONFIG", what
        assert "BEGIN" not in exc.value.message, what  # no key material in messages


def test_renewed_files_are_served_after_the_interval(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = tmp_path / "live"
    first, second = ca.issue("first", dest=tmp_path), ca.issue("second", dest=tmp_path)
    live.mkdir()
    shutil.copy(first.cert, live / "tls.crt")
    shutil.copy(first.key, live / "tls.key")
    clock = FakeClock()
    files = CertificateFiles(
        ServerTLS(str(live / "tls.crt"), str(live / "tls.key"), reload_interval_s=10.0), clock
    )
    assert files.changed_material() is None  # too early, and unchanged
    clock.now += 10
    assert files.changed_material() is None  # unchanged
    # a renewal that is half written: new certificate, old key → ignored, logged once
    shutil.copy(second.cert, live / "tls.crt")
    clock.now += 10
    assert files.changed_material() is None
    assert "TLS certificate not reloaded" in caplog.text
    assert files.material.certificate_chain == first.cert.read_bytes()
    caplog.clear()
    clock.now += 10
    assert files.changed_material() is None and not caplog.text
    shutil.copy(second.key, live / "tls.key")  # the renewal completes
    clock.now += 5
    assert files.changed_material() is None  # not looked at before the interval
    clock.now += 5
    material = files.changed_material()
    assert material is not None and material.certificate_chain == second.cert.read_bytes()
    assert files.material is material and files.reloads == 1
