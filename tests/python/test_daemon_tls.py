"""TCP over TLS to ``tiffanyd``, with a test certificate made by ``trustme``:
``tiffany.Client(tcp=..., token=..., tls_ca=...)`` and the ``tiffany`` command
(``--tcp``, ``--token-file``, ``--tls-ca``) succeed with the CA, and fail
clearly without it or with a wrong token."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from test_daemon import Daemon

import tiffany

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="tiffanyd needs Linux")

TOKEN = "tls-test-token"


@dataclass
class TlsDaemon:
    daemon: Daemon
    addr: str
    ca: Path
    token_file: Path


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[TlsDaemon]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_pem, cert_pem, key_pem = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    with open(cert_pem, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    d = Daemon(
        tmp_path,
        "--tcp-addr=127.0.0.1:0",
        f"--token-file={token_file}",
        f"--tls-cert={cert_pem}",
        f"--tls-key={key_pem}",
    )
    line = next(x for x in d.startup if "serving TCP" in x)
    m = re.search(r"addr=(\S+)", line)
    assert m is not None, line
    yield TlsDaemon(d, m.group(1), ca_pem, token_file)
    assert d.stop() == 0


def test_client_over_tls(tls: TlsDaemon) -> None:
    c = tiffany.Client(tcp=tls.addr, token=TOKEN, tls_ca=tls.ca)
    assert c.health()["status"] == "serving"
    job = c.exec(["echo", "over tls"])
    assert c.wait(job.id, timeout=30).succeeded
    assert c.logs(job.id).stdout == b"over tls\n"
    with pytest.raises(tiffany.Unauthenticated):
        tiffany.Client(tcp=tls.addr, token="wrong", tls_ca=tls.ca).health()
    with pytest.raises(tiffany.Unauthenticated):
        tiffany.Client(tcp=tls.addr, tls_ca=tls.ca).health()


def test_client_without_the_ca_fails_clearly(tls: TlsDaemon, tmp_path: Path) -> None:
    # Plain TCP to a TLS port: no gRPC answer.
    with pytest.raises(tiffany.DaemonUnavailable, match="pass its CA as tls_ca="):
        tiffany.Client(tcp=tls.addr, token=TOKEN).health()
    # TLS with a CA that did not sign the daemon's certificate.
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(tiffany.DaemonUnavailable, match="(?i)certificate|issuer"):
        tiffany.Client(tcp=tls.addr, token=TOKEN, tls_ca=other).health()
    with pytest.raises(FileNotFoundError):
        tiffany.Client(tcp=tls.addr, token=TOKEN, tls_ca=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="tls_ca is for TCP"):
        tiffany.Client(tls_ca=tls.ca)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tiffany._cli import cli; cli()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_over_tls(tls: TlsDaemon, tmp_path: Path) -> None:
    tcp = ("--tcp", tls.addr, "--token-file", str(tls.token_file))
    ok = cli(*tcp, "--tls-ca", str(tls.ca), "health")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("serving")
    submitted = cli(*tcp, "--tls-ca", str(tls.ca), "exec", "--", "echo", "cli over tls")
    assert submitted.returncode == 0, submitted.stderr
    waited = cli(*tcp, "--tls-ca", str(tls.ca), "wait", submitted.stdout.strip(), "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    plain = cli(*tcp, "health")
    assert plain.returncode == 3 and "--tls-ca" in plain.stderr
    wrong = tmp_path / "wrong-token"
    wrong.write_text("nope\n")
    denied = cli("--tcp", tls.addr, "--token-file", str(wrong), "--tls-ca", str(tls.ca), "health")
    assert denied.returncode == 1 and "unauthenticated" in denied.stderr
    missing = cli(*tcp, "--tls-ca", str(tmp_path / "missing.pem"), "health")
    assert missing.returncode == 2 and "missing.pem" in missing.stderr
