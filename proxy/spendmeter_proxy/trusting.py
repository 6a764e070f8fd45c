"""What the app containers trust: the proxy's fresh CA published beside the system's CAs.

At every start the proxy's CA is new, and only its public certificate leaves the proxy's private folder:
``ca.pem`` (the CA), ``ca-bundle.pem`` (system CAs + the CA, for ``SSL_CERT_FILE`` and friends) and
``truststore.p12`` (the same certificates as a PKCS#12 truststore for Java, password ``changeit``, for
``-Djavax.net.ssl.trustStore``). Files are replaced atomically, so an app never reads half a bundle.
"""

from __future__ import annotations

import os
import ssl
import warnings
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
TRUSTSTORE = "truststore.p12"
TRUSTSTORE_PASSWORD = b"changeit"  # Java's customary truststore password; the store holds no secret


def _certificates(bundle_pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; one that cannot be read is left out rather than failing them all."""
    certs = []
    for block in bundle_pem.split(b"-----END CERTIFICATE-----")[:-1]:
        try:
            with warnings.catch_warnings():  # some system CAs have old quirks (negative serials)
                warnings.simplefilter("ignore")
                certs.append(x509.load_pem_x509_certificate(block + b"-----END CERTIFICATE-----\n"))
        except ValueError:
            continue
    return certs


def java_truststore(bundle_pem: bytes) -> bytes:
    """A PKCS#12 truststore holding every certificate of a PEM bundle."""
    certs = _certificates(bundle_pem)
    entries = [pkcs12.PKCS12Certificate(c, f"spendmeter-{i}".encode()) for i, c in enumerate(certs)]
    return pkcs12.serialize_java_truststore(entries, BestAvailableEncryption(TRUSTSTORE_PASSWORD))


def system_bundle() -> bytes:
    """The system's trusted CAs (the distribution's bundle, else certifi's)."""
    candidates = [ssl.get_default_verify_paths().cafile, *SYSTEM_BUNDLES, certifi.where()]
    for path in candidates:
        if path and os.path.isfile(path):
            return Path(path).read_bytes()
    return b""


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(path)


def publish_ca(confdir: Path, ca_dir: Path) -> None:
    """Writes the public CA certificate, the trust bundle and the Java truststore; never the key."""
    cert = (confdir / "mitmproxy-ca-cert.pem").read_bytes()
    ca_dir.mkdir(parents=True, exist_ok=True)
    _write_public(ca_dir / "ca.pem", cert)
    bundle = system_bundle().rstrip(b"\n") + b"\n" + cert
    _write_public(ca_dir / "ca-bundle.pem", bundle)
    _write_public(ca_dir / TRUSTSTORE, java_truststore(bundle))


def upstream_trust(confdir: Path, extra: Path) -> Path:
    """A trust file for upstream servers: certifi's and the system's CAs plus ``extra``."""
    path = confdir / "upstream-trust.pem"
    parts = [Path(certifi.where()).read_bytes(), system_bundle(), extra.read_bytes()]
    path.write_bytes(b"\n".join(p.rstrip(b"\n") for p in parts) + b"\n")
    return path
