"""Certificates for the TLS tests, made with the `openssl` command: a CA of the test's own,
a broker certificate it signs (for 127.0.0.1 and localhost, or other names), and the
PKCS12 keystore ActiveMQ's `<sslContext>` reads.

Everything is throw-away: made in the test's temporary directory, never installed.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from icat_servers.adapters.activemq import BrokerTls


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS tests need the openssl command: apt-get install -y openssl")
    subprocess.run(
        [openssl, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


@dataclass(frozen=True, slots=True)
class TestCA:
    """A certificate authority: `cert` is what a client names in queueCAFile."""

    __test__ = False  # not a pytest test class

    directory: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.name}.crt"

    @property
    def key(self) -> Path:
        return self.directory / f"{self.name}.key"


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    cert: Path
    key: Path
    keystore: Path
    keystore_password: str = field(repr=False)

    def broker_tls(self, port: int) -> BrokerTls:
        return BrokerTls(port, self.keystore, self.keystore_password)


def make_ca(directory: Path, name: str = "test-ca") -> TestCA:
    directory.mkdir(parents=True, exist_ok=True)
    ca = TestCA(directory, name)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca.key),
        "-out",
        str(ca.cert),
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    return ca


def make_server_certificate(
    ca: TestCA,
    directory: Path,
    names: tuple[str, ...] = ("IP:127.0.0.1", "DNS:localhost"),
    name: str = "broker",
) -> ServerCertificate:
    """A broker certificate signed by `ca` for the subjectAltName entries `names`, and its
    PKCS12 keystore with a random password."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    keystore = directory / f"{name}.p12"
    password = secrets.token_hex(12)
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={name}",
        cwd=directory,
    )
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={','.join(names)}\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(extensions),
        cwd=directory,
    )
    _openssl(
        "pkcs12",
        "-export",
        "-in",
        str(cert),
        "-inkey",
        str(key),
        "-name",
        name,
        "-out",
        str(keystore),
        "-passout",
        f"pass:{password}",
        cwd=directory,
    )
    return ServerCertificate(cert, key, keystore, password)
