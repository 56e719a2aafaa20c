"""The identity key pair and certificate on disk."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from peerd.identity import (
    CERT_FILE,
    KEY_FILE,
    Identity,
    IdentityError,
    load_or_create_identity,
    make_certificate,
    peer_id_from_certificate,
)
from peerd.peerid import PeerID


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_first_start_creates_key_and_certificate(tmp_path):
    """The first start writes a 0600 PKCS#8 Ed25519 key and a PEM certificate."""
    identity = load_or_create_identity(tmp_path)
    key_path, cert_path = tmp_path / KEY_FILE, tmp_path / CERT_FILE
    assert _mode(key_path) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert == identity.certificate
    assert sorted(p.name for p in tmp_path.iterdir()) == [CERT_FILE, KEY_FILE]


def test_missing_data_dir_is_created(tmp_path):
    """A data directory that does not exist yet is created, private to the owner."""
    data_dir = tmp_path / "a" / "b"
    load_or_create_identity(data_dir)
    assert (data_dir / KEY_FILE).exists()
    assert _mode(data_dir) == 0o700


def test_reload_gives_same_identity(tmp_path):
    """Loading again yields the same PeerID and leaves both files untouched."""
    first = load_or_create_identity(tmp_path)
    key_bytes = (tmp_path / KEY_FILE).read_bytes()
    cert_bytes = (tmp_path / CERT_FILE).read_bytes()
    second = load_or_create_identity(tmp_path)
    assert second.peer_id == first.peer_id
    assert second.certificate == first.certificate
    assert (tmp_path / KEY_FILE).read_bytes() == key_bytes
    assert (tmp_path / CERT_FILE).read_bytes() == cert_bytes


def test_peer_id_is_digest_of_public_key(tmp_path):
    """The PeerID is derived from the public key's SubjectPublicKeyInfo DER."""
    identity = load_or_create_identity(tmp_path)
    spki = identity.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert identity.peer_id == PeerID.from_public_key_der(spki)
    assert peer_id_from_certificate(identity.certificate) == identity.peer_id


def test_certificate_fields(tmp_path):
    """The certificate is self-signed v3, CN = PeerID, valid from yesterday until 9999."""
    identity = load_or_create_identity(tmp_path)
    cert = identity.certificate
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == str(identity.peer_id)
    assert cert.issuer == cert.subject
    assert cert.version == x509.Version.v3
    assert cert.signature_hash_algorithm is None  # Ed25519
    cert.verify_directly_issued_by(cert)
    assert cert.not_valid_after_utc.year == 9999
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days > 365 * 7000


def test_serial_numbers_are_random():
    """Two certificates for the same key get different serial numbers."""
    key = Ed25519PrivateKey.generate()
    assert make_certificate(key).serial_number != make_certificate(key).serial_number


def _ec_key_pem() -> bytes:
    return generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _truncated_key_pem() -> bytes:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem[: len(pem) // 2]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a key\n", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(_truncated_key_pem(), id="truncated"),
        pytest.param(_ec_key_pem(), id="wrong-key-type"),
        pytest.param(os.urandom(200), id="random-bytes"),
    ],
)
def test_damaged_key_is_refused_and_kept(tmp_path, content):
    """A damaged key raises IdentityError naming the file and is never modified."""
    key_path = tmp_path / KEY_FILE
    key_path.write_bytes(content)
    key_path.chmod(0o600)
    before = os.stat(key_path)
    with pytest.raises(IdentityError) as info:
        load_or_create_identity(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{key_path}: damaged private key (")
    assert "refusing to replace it" in message
    assert "backup" in message
    assert key_path.read_bytes() == content
    after = os.stat(key_path)
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_mode,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_readable_by_others_is_refused(tmp_path, mode):
    """A key file group or others may access is refused, with its mode in the message."""
    load_or_create_identity(tmp_path)
    key_path = tmp_path / KEY_FILE
    content = key_path.read_bytes()
    key_path.chmod(mode)
    with pytest.raises(IdentityError) as info:
        load_or_create_identity(tmp_path)
    assert str(info.value).startswith(f"{key_path}: ")
    assert f"{mode:04o}" in str(info.value)
    assert key_path.read_bytes() == content
    assert _mode(key_path) == mode


def test_missing_certificate_is_regenerated(tmp_path):
    """A missing certificate is made again from the key; the PeerID is unchanged."""
    first = load_or_create_identity(tmp_path)
    (tmp_path / CERT_FILE).unlink()
    second = load_or_create_identity(tmp_path)
    assert second.peer_id == first.peer_id
    on_disk = x509.load_pem_x509_certificate((tmp_path / CERT_FILE).read_bytes())
    assert peer_id_from_certificate(on_disk) == first.peer_id


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
    ids=["empty", "garbage", "bad-der"],
)
def test_damaged_certificate_is_regenerated(tmp_path, content):
    """A damaged certificate is replaced by a sound one for the same key."""
    first = load_or_create_identity(tmp_path)
    (tmp_path / CERT_FILE).write_bytes(content)
    second = load_or_create_identity(tmp_path)
    assert second.peer_id == first.peer_id
    on_disk = x509.load_pem_x509_certificate((tmp_path / CERT_FILE).read_bytes())
    assert on_disk == second.certificate
    assert peer_id_from_certificate(on_disk) == first.peer_id


def test_certificate_of_another_key_is_regenerated(tmp_path):
    """A certificate for a different key is replaced; the key decides the identity."""
    first = load_or_create_identity(tmp_path)
    stranger = Identity.generate()
    (tmp_path / CERT_FILE).write_bytes(
        stranger.certificate.public_bytes(serialization.Encoding.PEM)
    )
    second = load_or_create_identity(tmp_path)
    assert second.peer_id == first.peer_id != stranger.peer_id
    assert peer_id_from_certificate(second.certificate) == first.peer_id
    on_disk = x509.load_pem_x509_certificate((tmp_path / CERT_FILE).read_bytes())
    assert on_disk == second.certificate


def test_no_temporary_files_left(tmp_path):
    """Atomic writes leave only the two identity files behind."""
    load_or_create_identity(tmp_path)
    (tmp_path / CERT_FILE).unlink()
    load_or_create_identity(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CERT_FILE, KEY_FILE]


def test_identity_rejects_certificate_of_other_key():
    """Identity.from_private_key refuses a certificate that is not for the key."""
    with pytest.raises(ValueError, match="does not match"):
        Identity.from_private_key(Ed25519PrivateKey.generate(), Identity.generate().certificate)
