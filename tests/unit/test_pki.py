"""The lab's certificates as kubeadm makes them, and kube-apiserver's authentication, with a real
TLS handshake on 127.0.0.1 between server_context() and ssl clients."""

import datetime
import ipaddress
import os
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netlab.api import pki

IPS = ["10.96.0.1", "172.18.0.2", "127.0.0.1"]
DNS = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
       "lab-control-plane", "localhost"]
DAY = datetime.timedelta(days=1)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def lab_pki(tmp_path_factory):
    """One lab's pki for the tests that only read it (RSA keys take a while to make)."""
    return pki.ensure(tmp_path_factory.mktemp("lab"), "lab", IPS, DNS)


@pytest.fixture(scope="module")
def creds(lab_pki, tmp_path_factory):
    """Client credentials as files: the admin's, an expired one and another CA's, both of whose
    users would be system:masters if they were believed."""
    d = tmp_path_factory.mktemp("creds")
    t = now()

    def files(name, pair):
        (d / f"{name}.crt").write_bytes(pair[0])
        (d / f"{name}.key").write_bytes(pair[1])
        return str(d / f"{name}.crt"), str(d / f"{name}.key")

    return {
        "none": None,
        "admin": (str(lab_pki.admin_crt), str(lab_pki.admin_key)),
        "expired": files("expired", pki.issue_client(lab_pki, "old-admin", ["system:masters"],
                                                     not_before=t - 2 * DAY, not_after=t - DAY)),
        "other-ca": files("other", pki.issue_client(lab_pki, "mallory", ["system:masters"], ca=pki.new_ca())),
    }


# --- the certificates ---------------------------------------------------------------------------

def test_the_ca_is_kubeadms(lab_pki):
    ca = load(lab_pki.ca_crt)
    assert ca.subject.rfc4514_string() == "CN=kubernetes"
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)                                    # self-signed
    assert ext(ca, x509.BasicConstraints).value.ca is True
    assert ext(ca, x509.BasicConstraints).critical
    ku = ext(ca, x509.KeyUsage).value
    assert (ku.key_cert_sign, ku.digital_signature, ku.key_encipherment) == (True, True, True)
    assert ext(ca, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["kubernetes"]
    # ten years (kubeadm's CACertificateValidityPeriod), NotBefore backdated five minutes
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert abs(lifetime - datetime.timedelta(days=3650, minutes=5)) < datetime.timedelta(seconds=5)
    assert abs(now() - datetime.timedelta(minutes=5) - ca.not_valid_before_utc) < datetime.timedelta(minutes=1)
    key = ca.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048  # kubeadm's default RSA-2048


def test_the_serving_certificate_is_kube_apiservers(lab_pki):
    ca, cert = load(lab_pki.ca_crt), load(lab_pki.server_crt)
    assert cert.subject.rfc4514_string() == "CN=kube-apiserver"
    cert.verify_directly_issued_by(ca)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(i) for i in IPS}
    assert set(san.get_values_for_type(x509.DNSName)) == set(DNS)
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    ku = ext(cert, x509.KeyUsage).value
    assert (ku.digital_signature, ku.key_encipherment, ku.key_cert_sign) == (True, True, False)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(lifetime - datetime.timedelta(days=365, minutes=5)) < datetime.timedelta(seconds=5)
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(ca, x509.SubjectKeyIdentifier).value.digest


def test_the_admin_certificate_is_in_system_masters(lab_pki):
    ca, cert = load(lab_pki.ca_crt), load(lab_pki.admin_crt)
    cert.verify_directly_issued_by(ca)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["kubernetes-admin"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(lifetime - datetime.timedelta(days=365, minutes=5)) < datetime.timedelta(seconds=5)


def test_key_material_is_roots_alone(lab_pki):
    assert stat.S_IMODE(os.stat(lab_pki.dir).st_mode) == 0o700
    files = [lab_pki.ca_crt, lab_pki.ca_key, lab_pki.server_crt, lab_pki.server_key, lab_pki.admin_crt,
             lab_pki.admin_key]
    for f in files:
        st = os.stat(f)
        assert stat.S_IMODE(st.st_mode) == 0o600, f
        assert st.st_uid == os.geteuid()
    assert sorted(os.listdir(lab_pki.dir)) == sorted(f.name for f in files)     # no temporary file left
    assert lab_pki.dir.name == "pki"


def test_ensure_is_idempotent(tmp_path):
    p = pki.ensure(tmp_path, "lab", IPS, DNS)
    before = {f: f.read_bytes() for f in p.dir.iterdir()}
    assert pki.ensure(tmp_path, "lab", list(reversed(IPS)), DNS) == p            # the same SANs, another order
    assert {f: f.read_bytes() for f in p.dir.iterdir()} == before


def test_other_sans_reissue_the_serving_certificate_from_the_same_ca(tmp_path):
    p = pki.ensure(tmp_path, "lab", IPS, DNS)
    ca, admin, old = p.ca_crt.read_bytes(), p.admin_crt.read_bytes(), load(p.server_crt)
    pki.ensure(tmp_path, "lab", IPS + ["10.0.0.9"], DNS)
    assert p.ca_crt.read_bytes() == ca and p.admin_crt.read_bytes() == admin
    cert = load(p.server_crt)
    assert cert.serial_number != old.serial_number
    cert.verify_directly_issued_by(load(p.ca_crt))
    assert set(ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)) == \
        {ipaddress.ip_address(i) for i in IPS + ["10.0.0.9"]}
    assert stat.S_IMODE(os.stat(p.server_crt).st_mode) == 0o600


def test_a_broken_or_loosened_file_is_repaired(tmp_path):
    p = pki.ensure(tmp_path, "lab", IPS, DNS)
    ca = p.ca_crt.read_bytes()
    p.admin_key.write_bytes(pki.new_ca()[1])             # a key that does not match admin.crt
    os.chmod(p.server_key, 0o644)
    pki.ensure(tmp_path, "lab", IPS, DNS)
    assert p.ca_crt.read_bytes() == ca
    assert pki.authenticate(x509.load_pem_x509_certificate(p.admin_crt.read_bytes()).public_bytes(
        serialization.Encoding.DER), None, ca).name == "kubernetes-admin"
    assert load(p.admin_crt).public_key() == serialization.load_pem_private_key(
        p.admin_key.read_bytes(), None).public_key()
    assert stat.S_IMODE(os.stat(p.server_key).st_mode) == 0o600


def test_a_new_ca_reissues_both_leaves(tmp_path):
    p = pki.ensure(tmp_path, "lab", IPS, DNS)
    p.ca_key.unlink()
    pki.ensure(tmp_path, "lab", IPS, DNS)
    ca = load(p.ca_crt)
    load(p.server_crt).verify_directly_issued_by(ca)
    load(p.admin_crt).verify_directly_issued_by(ca)


# --- authenticate(), as kube-apiserver's authenticators ----------------------------------------------

def der(pem):
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_the_admin_certificate_is_the_admin_in_system_masters(lab_pki):
    user = pki.authenticate(der(lab_pki.admin_crt.read_bytes()), None, lab_pki.ca_crt.read_bytes())
    assert user == pki.User("kubernetes-admin", ("system:masters", "system:authenticated"))


def test_a_client_certificate_names_the_user_and_its_groups(lab_pki):
    cert, _ = pki.issue_client(lab_pki, "jane", ["dev", "ops"])
    user = pki.authenticate(der(cert), None, lab_pki.ca_crt.read_bytes())
    assert user == pki.User("jane", ("dev", "ops", "system:authenticated"))


@pytest.mark.parametrize("window", [(-2, -1), (1, 2)], ids=["expired", "not-yet-valid"])
def test_a_certificate_outside_its_validity_is_refused(lab_pki, window):
    cert, _ = pki.issue_client(lab_pki, "kubernetes-admin", ["system:masters"],
                               not_before=now() + window[0] * DAY, not_after=now() + window[1] * DAY)
    assert pki.authenticate(der(cert), None, lab_pki.ca_crt.read_bytes()) is None


def test_another_cas_certificate_is_refused(lab_pki):
    other = pki.new_ca()                                # the same name "kubernetes", another key
    cert, _ = pki.issue_client(lab_pki, "kubernetes-admin", ["system:masters"], ca=other)
    assert pki.authenticate(der(cert), None, lab_pki.ca_crt.read_bytes()) is None
    assert pki.authenticate(der(cert), None, other[0]).name == "kubernetes-admin"    # its own CA would


def test_a_serving_certificate_is_no_client_certificate(lab_pki):
    assert pki.authenticate(der(lab_pki.server_crt.read_bytes()), None, lab_pki.ca_crt.read_bytes()) is None


def test_garbage_is_refused(lab_pki):
    assert pki.authenticate(b"\x30\x03\x02\x01\x01", None, lab_pki.ca_crt.read_bytes()) is None


@pytest.mark.parametrize("header", ["Bearer forged", "bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "Bearer a b"])
def test_any_bearer_token_is_invalid(lab_pki, header):
    assert pki.authenticate(None, header, lab_pki.ca_crt.read_bytes()) is None


@pytest.mark.parametrize("header", [None, "", "Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer  spaced"])
def test_no_credentials_are_anonymous(lab_pki, header):
    # no header, another scheme, an empty bearer token: the bearer-token authenticator has nothing
    assert pki.authenticate(None, header, lab_pki.ca_crt.read_bytes()) == pki.ANONYMOUS
    assert pki.ANONYMOUS == pki.User("system:anonymous", ("system:unauthenticated",))


def test_a_valid_certificate_wins_over_a_token_and_a_bad_one_is_not_anonymous(lab_pki, creds):
    ca = lab_pki.ca_crt.read_bytes()
    # x509 comes before bearer tokens in kube-apiserver's union; anonymous is fail-on-error
    assert pki.authenticate(der(lab_pki.admin_crt.read_bytes()), "Bearer forged", ca).name == "kubernetes-admin"
    with open(creds["expired"][0], "rb") as f:
        assert pki.authenticate(der(f.read()), None, ca) is None


# --- a real handshake: what the app behind server_context() sees ---------------------------------------

def handshake(p, cert, version):
    """Serve one connection with server_context(p) on 127.0.0.1; connect an ssl client presenting
    `cert` (files) or none, limited to TLS `version`. Returns (server side, client side)."""
    ctx = pki.server_context(p)
    ca = p.ca_crt.read_bytes()
    seen = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve():
            conn, _ = listener.accept()
            conn.settimeout(10)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    seen["user"] = pki.authenticate(tls.getpeercert(binary_form=True), None, ca)
                    tls.recv(4)
                    tls.sendall(b"401" if seen["user"] is None else b"200")
            except ssl.SSLError as e:
                seen["refused"] = e
            finally:
                conn.close()

        server = threading.Thread(target=serve)
        server.start()
        client = ssl.create_default_context(cafile=str(p.ca_crt))
        client.minimum_version = client.maximum_version = version
        if cert:
            client.load_cert_chain(*cert)
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                    client.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET ")
                answer = tls.recv(3)
        except ssl.SSLError as e:
            answer = e
        server.join(10)
    assert not server.is_alive()
    return seen, answer


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_no_certificate_reaches_the_app_anonymous(lab_pki, creds, version):
    seen, answer = handshake(lab_pki, creds["none"], version)
    assert seen == {"user": pki.ANONYMOUS} and answer == b"200"


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_the_admin_certificate_reaches_the_app_as_the_admin(lab_pki, creds, version):
    seen, answer = handshake(lab_pki, creds["admin"], version)
    assert seen == {"user": pki.User("kubernetes-admin", ("system:masters", "system:authenticated"))}
    assert answer == b"200"


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_an_expired_certificate_passes_the_handshake_and_the_app_refuses_it(lab_pki, creds, version):
    # X509_V_FLAG_NO_CHECK_TIME: without it OpenSSL would end the handshake ("certificate has expired")
    seen, answer = handshake(lab_pki, creds["expired"], version)
    assert seen == {"user": None} and answer == b"401"


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_another_cas_certificate_is_refused_in_the_handshake(lab_pki, creds, version):
    # OpenSSL verifies a requested certificate's issuer in the handshake and Python's ssl offers no
    # way around it: this case cannot reach the app (see server_context)
    seen, answer = handshake(lab_pki, creds["other-ca"], version)
    assert set(seen) == {"refused"}
    assert isinstance(seen["refused"], ssl.SSLCertVerificationError)
    assert seen["refused"].verify_message == "unable to get local issuer certificate"
    # under TLS 1.3 the client's handshake is over before the server's verdict: its first read
    # gets the alert, or the closed connection when the server's close overtakes it
    assert isinstance(answer, ssl.SSLError)
    assert answer.reason == "TLSV1_ALERT_UNKNOWN_CA" or (version == ssl.TLSVersion.TLSv1_3
                                                        and isinstance(answer, ssl.SSLEOFError))


def test_tls_below_1_2_is_not_served(lab_pki):
    ctx = pki.server_context(lab_pki)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
