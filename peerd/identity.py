"""
This peer's identity on disk: an Ed25519 key pair and a self-signed certificate.

The private key (``identity.key``, PEM PKCS#8, mode 0600) *is* the identity:
it is created once and never replaced by peerd.  A key file that cannot be
read is an error the operator must resolve.  The certificate
(``identity.crt``) is derivable from the key, so a missing, damaged or
mismatched one is simply made again.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import stat
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from peerd.disk import write_atomically
from peerd.peerid import PeerID

KEY_FILE = "identity.key"
CERT_FILE = "identity.crt"

_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
_BACKDATE = datetime.timedelta(days=1)


class IdentityError(Exception):
    """The identity files cannot be used; the message names the file and the problem."""


def _spki_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def peer_id_from_certificate(cert: x509.Certificate) -> PeerID:
    """The PeerID of the public key (SubjectPublicKeyInfo, DER) a certificate carries."""
    return PeerID.from_public_key_der(_spki_der(cert.public_key()))


@dataclass(frozen=True)
class Identity:
    """This peer's key pair, its self-signed certificate, and the PeerID they prove."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate
    peer_id: PeerID

    @classmethod
    def from_private_key(
        cls, private_key: Ed25519PrivateKey, certificate: x509.Certificate | None = None
    ) -> Identity:
        """
        Build an identity from a key, with a fresh certificate unless one is given.

        :raises ValueError: ``certificate`` is not for ``private_key``.
        """
        peer_id = PeerID.from_public_key_der(_spki_der(private_key.public_key()))
        if certificate is None:
            certificate = make_certificate(private_key)
        elif peer_id_from_certificate(certificate) != peer_id:
            raise ValueError("the certificate does not match the private key")
        return cls(private_key, certificate, peer_id)

    @classmethod
    def generate(cls) -> Identity:
        """A new, random identity held only in memory (for tests and tools)."""
        return cls.from_private_key(Ed25519PrivateKey.generate())


def make_certificate(private_key: Ed25519PrivateKey) -> x509.Certificate:
    """A self-signed X.509 v3 certificate whose subject and issuer CN is the key's PeerID."""
    peer_id = PeerID.from_public_key_der(_spki_der(private_key.public_key()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(peer_id))])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private_key, algorithm=None)
    )


def load_or_create_identity(data_dir: pathlib.Path) -> Identity:
    """
    Load this peer's identity from ``data_dir``, creating it on first start.

    ``data_dir`` is created (mode 0700) if missing.  The certificate is
    (re)written when it is missing, damaged or not for the key.

    :raises IdentityError: the key file is damaged, has an unsafe mode, or a
        file cannot be read or written.
    """
    data_dir = pathlib.Path(data_dir)
    key_path = data_dir / KEY_FILE
    cert_path = data_dir / CERT_FILE
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise IdentityError(f"{data_dir}: cannot create the data directory ({e})") from e

    private_key = _load_private_key(key_path)
    if private_key is None:
        private_key = _create_private_key(key_path)

    certificate = _load_matching_certificate(cert_path, private_key)
    return Identity.from_private_key(private_key, certificate)


def _load_private_key(path: pathlib.Path) -> Ed25519PrivateKey | None:
    """The key in ``path``, or ``None`` if there is no such file."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IdentityError(f"{path}: cannot read the private key ({e.strerror})") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path}: private key is accessible to group or others (mode "
            f"{stat.S_IMODE(mode):04o}); run 'chmod 600 {path}' if it has not leaked"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise _damaged(path, str(e) or type(e).__name__) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise _damaged(path, f"expected an Ed25519 key, found {type(key).__name__}")
    return key


def _damaged(path: pathlib.Path, why: str) -> IdentityError:
    return IdentityError(
        f"{path}: damaged private key ({why}); refusing to replace it — restore it "
        "from a backup or move it away to create a new identity"
    )


def _create_private_key(path: pathlib.Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        write_atomically(path, pem, replace=False)
    except FileExistsError:
        # Another process created it between our look and our write: use theirs.
        loaded = _load_private_key(path)
        assert loaded is not None
        return loaded
    except OSError as e:
        raise IdentityError(f"{path}: cannot write the new private key ({e})") from e
    return key


def _load_matching_certificate(
    path: pathlib.Path, private_key: Ed25519PrivateKey
) -> x509.Certificate:
    """The certificate in ``path`` if it is sound and for ``private_key``; else a new one."""
    want = _spki_der(private_key.public_key())
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        if _spki_der(cert.public_key()) == want:
            cert.verify_directly_issued_by(cert)
            return cert
    except FileNotFoundError:
        pass
    except (ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature):
        pass  # damaged: it is derivable, so make it again
    except OSError as e:
        raise IdentityError(f"{path}: cannot read the certificate ({e.strerror})") from e
    cert = make_certificate(private_key)
    try:
        write_atomically(path, cert.public_bytes(serialization.Encoding.PEM), replace=True)
    except OSError as e:
        raise IdentityError(f"{path}: cannot write the certificate ({e})") from e
    return cert
