"""A private certificate authority for the broker: its server certificate and the services' client
certificates.

Devices reach the broker over a network that is not ours, so they speak MQTT over TLS and pin
this CA (`tagwatch device add` prints it). The platform's own services (ingest, dispatcher, the
provisioning admin, the development gateway) authenticate on a separate listener with a client
certificate signed by the same CA: the broker takes the certificate's common name as the user name
(`use_identity_as_username`), and their broker passwords are random values nobody keeps. A service
identity therefore cannot log in on the devices' listener, which asks for passwords, and a device
password cannot open the service listener, which asks for a certificate.

Keys are ECDSA P-256 (small, fast handshakes on a tag's modem); the CA lives ten years, leaf
certificates two, and `ensure` issues only what is missing, so a restart keeps what devices pinned.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 730


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Where the CA and every issued identity live."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def identity(self, name: str) -> Identity:
        return Identity(self.directory / f"{name}.crt", self.directory / f"{name}.key")

    def ensure(self, server_names: list[str], clients: list[str]) -> None:
        """Create the CA, the broker's server certificate and each client certificate if absent."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if not (self.ca_cert.exists() and self.ca_key.exists()):
            _write_ca(self.ca_cert, self.ca_key)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        server = self.identity("server")
        if not (server.cert.exists() and server.key.exists()):
            _issue(ca_cert, ca_key, server, "tagwatch-broker", server_names, client=False)
        for name in clients:
            identity = self.identity(name)
            if not (identity.cert.exists() and identity.key.exists()):
                _issue(ca_cert, ca_key, identity, name, [], client=True)

    def ensure_server(self, name: str, server_names: list[str]) -> Identity:
        """Another server certificate from the same CA (the database's, in deploy/compose.yaml,
        so that EMQX and the services verify it); issued only when absent. `ensure` first."""
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        identity = self.identity(name)
        if not (identity.cert.exists() and identity.key.exists()):
            _issue(ca_cert, ca_key, identity, server_names[0], server_names, client=False)
        return identity


def default_server_names() -> list[str]:
    """Loopback names plus this host's name: what clients on this machine and the LAN dial."""
    names = ["localhost", "127.0.0.1", "::1"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_ca(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tagwatch private CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    identity: Identity,
    common_name: str,
    names: list[str],
    *,
    client: bool,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        alternative: list[x509.GeneralName] = []
        for name in names:
            try:
                alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternative.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(identity.key, key)
    identity.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
