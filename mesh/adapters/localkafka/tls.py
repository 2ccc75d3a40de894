"""A private certificate authority and a broker certificate for the local broker's TLS listener.

Made once per broker directory with ``cryptography`` (no keytool, no openssl binary): a CA
(``ca.pem``, what clients trust: ``MESH_SSL_CA_LOCATION``) and a broker key and certificate
for ``127.0.0.1`` and ``localhost``. Kafka takes the broker's as a PEM keystore given inline
(``ssl.keystore.key``, PKCS#8, and ``ssl.keystore.certificate.chain``): Java 17 cannot read a
PBES2-encrypted key file, and an unencrypted key is accepted only inline. The properties file
that holds it is written owner-only, like every file here.

For a local broker and tests: a production cluster brings its own certificates, and the mesh
only needs the CA (and, for mutual TLS, a client certificate) to connect to it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["BrokerTls", "ensure_broker_tls"]

_VALID = datetime.timedelta(days=825)


@dataclass(frozen=True, slots=True)
class BrokerTls:
    ca: Path  # what clients trust
    key_pem: str  # the broker's private key (PKCS#8), for ssl.keystore.key
    chain_pem: str  # its certificate, then the CA's, for ssl.keystore.certificate.chain


def ensure_broker_tls(directory: Path) -> BrokerTls:
    """The CA and the broker's key and chain in ``directory`` (made once, kept after)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_file, key_file, chain_file = (directory / n for n in ("ca.pem", "broker.key", "chain.pem"))
    if not (ca_file.exists() and key_file.exists() and chain_file.exists()):
        ca_key, ca_cert = _authority()
        broker_key, broker_cert = _broker(ca_key, ca_cert)
        key = broker_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (broker_cert, ca_cert))
        _write(ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
        _write(key_file, key)
        _write(chain_file, chain)
    return BrokerTls(ca_file, key_file.read_text(), chain_file.read_text())


def _authority() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-mesh local CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _broker(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
