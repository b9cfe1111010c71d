"""kubeadm's `init phase certs` for one lab (the cluster CA, kube-apiserver's serving certificate,
the admin's client certificate) and kube-apiserver's x509 and bearer-token authenticators.

The certificates are laid out as kubeadm's: RSA-2048 keys (kubeadm's default
EncryptionAlgorithm), a self-signed CA "kubernetes" with SAN DNS:kubernetes valid ten years,
leaves valid one year, every NotBefore backdated five minutes (kubeadm's CertificateBackdate) to
tolerate a small clock skew, leaves with CA:FALSE, keyUsage digitalSignature+keyEncipherment and
one extended key usage. The files sit under <state_dir>/pki/ with kubeadm's names (ca.crt,
apiserver.crt, ...); the admin's pair, which kubeadm embeds in admin.conf, is admin.crt/admin.key.
Key material is root's alone: the directory 0700, every file 0600, each written to a temporary
file and renamed over the old one, so a reader never sees half a key.

Authentication follows kube-apiserver's union of authenticators (x509 first, then bearer token,
anonymous last with fail-on-error): a client certificate is verified as Go's x509.Verify does with
the cluster CA as the only root and ExtKeyUsageClientAuth asked for; the user is its CN, the groups
its O values plus system:authenticated. netlab issues no tokens, so any non-empty bearer token is
an invalid one (401), as a forged service-account token is on a real cluster.
"""

import datetime
import functools
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netlab.errors import NetlabError

CA_CN = "kubernetes"
SERVER_CN = "kube-apiserver"
ADMIN_CN = "kubernetes-admin"
ADMIN_GROUP = "system:masters"

CA_VALIDITY = datetime.timedelta(days=365 * 10)      # kubeadm's CACertificateValidityPeriod
VALIDITY = datetime.timedelta(days=365)              # kubeadm's CertificateValidityPeriod
BACKDATE = datetime.timedelta(minutes=5)             # kubeadm's CertificateBackdate

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (x509_vfy.h): skip the validity-window check while verifying
# the peer's chain. The ssl module has no name for it, but verify_flags takes OpenSSL's bits.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


@dataclass(frozen=True)
class Paths:
    dir: Path
    ca_crt: Path
    ca_key: Path
    server_crt: Path
    server_key: Path
    admin_crt: Path
    admin_key: Path


def paths(state_dir):
    d = Path(state_dir) / "pki"
    return Paths(dir=d, ca_crt=d / "ca.crt", ca_key=d / "ca.key", server_crt=d / "apiserver.crt",
                 server_key=d / "apiserver.key", admin_crt=d / "admin.crt", admin_key=d / "admin.key")


# --- making certificates --------------------------------------------------------------------

def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key):
    # kubeadm writes RSA keys as PKCS#1 ("RSA PRIVATE KEY"), unencrypted
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _subject(cn, organizations=()):
    # Go's pkix.Name puts O before CN, as kubeadm's certificates read: "O = system:masters, CN = kubernetes-admin"
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
                     + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(cert_sign):
    return x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=cert_sign,
                         content_commitment=False, data_encipherment=False, key_agreement=False,
                         crl_sign=False, encipher_only=False, decipher_only=False)


def new_ca(cn=CA_CN):
    """A self-signed CA as kubeadm's `certs ca` phase makes it -> (cert_pem, key_pem)."""
    key = _new_key()
    now = _now()
    name = _subject(cn)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + CA_VALIDITY)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def _sign(ca_cert, ca_key, cn, organizations, usage, dns=(), ips=(), not_before=None, not_after=None):
    key = _new_key()
    now = _now()
    builder = (x509.CertificateBuilder()
               .subject_name(_subject(cn, organizations)).issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - BACKDATE)
               .not_valid_after(not_after or now + VALIDITY)
               .add_extension(_key_usage(cert_sign=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                                        critical=False)
    except x509.ExtensionNotFound:
        pass
    if dns or ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns] + [x509.IPAddress(i) for i in ips]),
            critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def issue_client(p, cn, organizations, not_before=None, not_after=None, ca=None):
    """A client certificate (clientAuth) for user `cn` in groups `organizations` -> (cert_pem, key_pem),
    signed by the lab's CA at `p`, or by `ca` = (cert_pem, key_pem) such as new_ca() returns."""
    ca_cert_pem, ca_key_pem = ca if ca is not None else (p.ca_crt.read_bytes(), p.ca_key.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    return _sign(ca_cert, ca_key, cn, tuple(organizations), ExtendedKeyUsageOID.CLIENT_AUTH,
                 not_before=not_before, not_after=not_after)


# --- the lab's files --------------------------------------------------------------------------

def _write(path, data):
    """Write `data` to `path` atomically, mode 0600: a temporary file beside it, renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")   # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_pair(crt_path, key_path, pair):
    cert_pem, key_pem = pair
    # the key first: a crash between the two leaves a pair that does not match, which _load refuses
    _write(key_path, key_pem)
    _write(crt_path, cert_pem)


def _load(crt_path, key_path):
    """(cert, key) from the files, or None if either is missing, unreadable or they do not match."""
    try:
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if cert.public_key() != key.public_key():
        return None
    return cert, key


def _valid_now(cert, now):
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _issued_by(cert, ca_cert):
    try:
        cert.verify_directly_issued_by(ca_cert)
        return True
    except Exception:                       # ValueError, TypeError, InvalidSignature: not this CA's
        return False


def _ext_usages(cert):
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _sans(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.IPAddress)), set(san.get_values_for_type(x509.DNSName))


def _names(cert, oid):
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def ensure(state_dir, lab, ips, dns):
    """Create, or keep, the lab's CA, kube-apiserver's serving certificate (SANs `ips` and `dns`)
    and the admin's client certificate; return their Paths.

    Idempotent: what is there, readable, matching its key, valid now and as asked is kept. A
    serving certificate whose SANs differ from those asked for is reissued from the same CA, as
    `kubeadm init phase certs apiserver` does once the old pair is removed; a new CA (none, or an
    unusable one) reissues both leaves."""
    p = paths(state_dir)
    want_ips = {ipaddress.ip_address(str(i)) for i in ips}
    want_dns = {str(d) for d in dns}
    try:
        p.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(p.dir, 0o700)
        now = _now()

        ca = _load(p.ca_crt, p.ca_key)
        if ca is None or not _valid_now(ca[0], now):
            _write_pair(p.ca_crt, p.ca_key, new_ca())
            ca = _load(p.ca_crt, p.ca_key)
        ca_cert, ca_key = ca

        def usable(pair, usage):
            return (pair is not None and _issued_by(pair[0], ca_cert) and _valid_now(pair[0], now)
                    and _ext_usages(pair[0]) == {usage})

        server = _load(p.server_crt, p.server_key)
        if not usable(server, ExtendedKeyUsageOID.SERVER_AUTH) or _sans(server[0]) != (want_ips, want_dns) \
                or _names(server[0], NameOID.COMMON_NAME) != [SERVER_CN]:
            _write_pair(p.server_crt, p.server_key,
                        _sign(ca_cert, ca_key, SERVER_CN, (), ExtendedKeyUsageOID.SERVER_AUTH,
                              dns=sorted(want_dns), ips=sorted(want_ips, key=lambda a: (a.version, a))))

        admin = _load(p.admin_crt, p.admin_key)
        if not usable(admin, ExtendedKeyUsageOID.CLIENT_AUTH) \
                or _names(admin[0], NameOID.COMMON_NAME) != [ADMIN_CN] \
                or _names(admin[0], NameOID.ORGANIZATION_NAME) != [ADMIN_GROUP]:
            _write_pair(p.admin_crt, p.admin_key,
                        _sign(ca_cert, ca_key, ADMIN_CN, (ADMIN_GROUP,), ExtendedKeyUsageOID.CLIENT_AUTH))

        for f in (p.ca_crt, p.ca_key, p.server_crt, p.server_key, p.admin_crt, p.admin_key):
            os.chmod(f, 0o600)              # kept files too: key material is root's alone
    except OSError as e:
        raise NetlabError(f"lab {lab}: cannot write its certificates in {p.dir}: {e.strerror or e}") from e
    return p


# --- serving and authenticating ----------------------------------------------------------------

def server_context(p):
    """The TLS context kube-apiserver serves with: TLS 1.2 or newer, the serving certificate, and
    client certificates requested (CERT_OPTIONAL) against the lab's CA only.

    Go's kube-apiserver requests a client certificate without verifying it in the handshake
    (tls.RequestClientCert) and checks it afterwards in its x509 authenticator, so every bad
    certificate gets HTTP 401 with a Status body. OpenSSL, under Python's ssl, verifies the chain in
    the handshake whenever it requests a certificate (CERT_NONE does not request one at all) and
    offers no verify callback, so what this context can do, measured in tests/unit/test_pki.py:

    - no certificate: the handshake succeeds, getpeercert() is None -> ANONYMOUS (/version 200,
      the rest 401/403 at the app);
    - a certificate of the lab's CA: the handshake succeeds, authenticate() gives its user;
    - an expired (or not yet valid) certificate of the lab's CA: X509_V_FLAG_NO_CHECK_TIME lets it
      through the handshake, so the app sees it and authenticate() refuses it -> 401;
    - a certificate of another CA: refused in the handshake (OpenSSL's "unable to get local issuer
      certificate"; the client reads TLS alert unknown_ca, kubectl says "remote error: tls: unknown
      certificate authority"; under TLS 1.3 the client's handshake completes first and the alert
      arrives on its first read), the app never sees the connection. No
      supported setting of the ssl module lets an untrusted issuer pass (no verify flag skips the
      issuer, and the CA names clients choose by are not settable), so this one case stays a TLS
      refusal instead of a 401; nothing is read or changed either way.

    With NO_CHECK_TIME the handshake checks only the signature chain; the validity windows of the
    leaf and the CA are checked by authenticate(), which the app must call on every request.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(p.server_crt, p.server_key)
    ctx.load_verify_locations(cafile=p.ca_crt)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
    ctx.set_alpn_protocols(["http/1.1"])        # kubectl offers h2 and http/1.1; this server speaks 1.1
    return ctx


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple


ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))
AUTHENTICATED = "system:authenticated"


class _Invalid(Exception):
    pass


@functools.lru_cache(maxsize=16)
def _ca(ca_cert_pem_bytes):
    return x509.load_pem_x509_certificate(ca_cert_pem_bytes)


def _x509_user(der, ca_cert_pem_bytes, now):
    """As k8s.io/apiserver's x509 authenticator: the verified chain's leaf -> User, None when it has
    no CN (not this authenticator's), _Invalid when verification fails."""
    try:
        leaf = x509.load_der_x509_certificate(bytes(der))
        ca = _ca(ca_cert_pem_bytes.encode() if isinstance(ca_cert_pem_bytes, str) else bytes(ca_cert_pem_bytes))
    except ValueError as e:
        raise _Invalid(str(e)) from e
    if not _issued_by(leaf, ca):
        raise _Invalid("signed by unknown authority")
    for cert in (leaf, ca):
        if not _valid_now(cert, now):
            raise _Invalid("certificate has expired or is not yet valid")
        usages = _ext_usages(cert)          # no extension means any usage, as Go reads it
        if usages and not usages & {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}:
            raise _Invalid("certificate specifies an incompatible key usage")
    if any(e.critical and isinstance(e.value, x509.UnrecognizedExtension) for e in leaf.extensions):
        raise _Invalid("unhandled critical extension")
    cns = _names(leaf, NameOID.COMMON_NAME)
    if not cns or not cns[-1]:
        return None                         # CommonNameUserConversion: no CN, no user from this cert
    groups = tuple(_names(leaf, NameOID.ORGANIZATION_NAME))
    return User(cns[-1], groups if AUTHENTICATED in groups else groups + (AUTHENTICATED,))


def _bearer_token(authorization_header):
    """As k8s.io/apiserver's bearertoken authenticator: the token of `Authorization: Bearer <token>`,
    or None when there is none (no header, another scheme, an empty token)."""
    parts = (authorization_header or "").strip().split(" ", 2)
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


def authenticate(peer_cert_der, authorization_header, ca_cert_pem_bytes):
    """The request's user, as kube-apiserver's authenticators decide it, or None for 401.

    A client certificate verified against the lab's CA (signature, validity window of leaf and
    CA, clientAuth usage) -> User(CN, (*O, "system:authenticated")); a certificate that fails any
    check -> None, even if a token or nothing else follows (the anonymous authenticator is
    fail-on-error). A non-empty Bearer token -> None: netlab issues none, so every one is invalid.
    No credentials at all (or another Authorization scheme, as kube-apiserver ignores it) -> ANONYMOUS.
    """
    if peer_cert_der:
        try:
            user = _x509_user(peer_cert_der, ca_cert_pem_bytes, _now())
        except _Invalid:
            return None
        if user is not None:
            return user
    if _bearer_token(authorization_header) is not None:
        return None
    return ANONYMOUS
