"""HTTP-01 for certbot='Y' rows: both issuers against real nginx, BIND and Pebble.

The renew job runs as ``lecentral renew`` does (SQLite store); nginx serves each site's webroot
at Pebble's httpPort, names resolve to 127.0.0.1 through BIND (see webroot_world.py). Tests
parametrized over ``issuer`` run once with the native ``webroot`` issuer and once with
``certbot-webroot`` (the real certbot from PyPI).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from renew_world import assert_issued, run
from webroot_world import (
    ISSUERS,
    SITES,
    WebWorld,
    add_row,
    assert_failed_untouched,
    leftovers,
    make_config,
)

from lecentral.store.sql import SqlStore


@pytest.mark.parametrize("issuer", ISSUERS)
def test_two_name_san_certificate(web_world: WebWorld, store: SqlStore, tmp_path: Path,
                                  issuer: str) -> None:
    names = SITES["san"]
    webroot = web_world.webroot("san")
    _, key = add_row(store, names, webroot=webroot)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    assert [(o.name, o.status, o.issuer) for o in report.final] == [(names[0], "issued", issuer)]
    assert_issued(store, names[0], names, key)
    assert store.events(names[0])[0].kind == "issued"
    # challenge files and the directories made for them are gone
    assert leftovers(webroot) == []
    if issuer == "certbot-webroot":
        assert os.listdir(tmp_path / "certbot" / "runs") == []  # CSR and output removed


@pytest.mark.parametrize("issuer", ISSUERS)
def test_webroot_the_web_server_does_not_serve(web_world: WebWorld, store: SqlStore,
                                               tmp_path: Path, issuer: str) -> None:
    """nginx serves wrong.web.test from another directory: a clear error before the CA is asked."""
    name = SITES["wrong"][0]
    elsewhere = tmp_path / "htdocs"
    elsewhere.mkdir()
    add_row(store, [name], webroot=elsewhere)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    message = assert_failed_untouched(store, report, name, name, str(elsewhere),
                                      "does not serve the webroot", "404", "webroot_path")
    assert "the CA was not asked" in message
    assert leftovers(elsewhere) == [] and leftovers(web_world.webroot("wrong")) == []


@pytest.mark.parametrize("issuer", ISSUERS)
@pytest.mark.parametrize(("webroot", "words"), [
    ("missing", ["does not exist on this host"]),
    ("file", ["is not a directory"]),
    ("relative/htdocs", ["is not an absolute path"]),
    ("/srv/www\nx", ["control characters"]),
])
def test_bad_webroot_path(web_world: WebWorld, store: SqlStore, tmp_path: Path, issuer: str,
                          webroot: str | None, words: list[str]) -> None:
    """The column comes from the database: checked before anything is written or ordered."""
    name = SITES["one"][0]
    path: str | None = webroot
    if webroot == "missing":
        path = str(tmp_path / "no" / "such" / "htdocs")
    elif webroot == "file":
        (tmp_path / "index.html").write_text("a file, not a DocumentRoot\n")
        path = str(tmp_path / "index.html")
    add_row(store, [name], webroot=path)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    assert_failed_untouched(store, report, name, name, *words)
    if webroot == "missing":
        assert not (tmp_path / "no").exists()
    assert not (tmp_path / "acme" / "account.key").exists()  # no account key made: the CA was never contacted
    assert not (tmp_path / "certbot").exists()


@pytest.mark.parametrize("issuer", ISSUERS)
def test_certbot_row_without_webroot_path_is_invalid(web_world: WebWorld, store: SqlStore,
                                                     tmp_path: Path, issuer: str) -> None:
    """An empty webroot_path makes the row invalid (list says so before any run), and the renew
    job refuses it without contacting the CA."""
    name = SITES["one"][0]
    add_row(store, [name], webroot=None)
    row = store.get(name)
    assert row is not None and any("webroot_path is empty" in p for p in row.problems)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    (outcome,) = [o for o in report.final if o.name == name]
    assert outcome.status == "invalid" and "webroot_path is empty" in outcome.message
    assert not (tmp_path / "acme" / "account.key").exists()
    assert not (tmp_path / "certbot").exists()


@pytest.mark.parametrize("issuer", ISSUERS)
def test_webroot_where_challenge_files_cannot_be_written(web_world: WebWorld, store: SqlStore,
                                                         tmp_path: Path, issuer: str) -> None:
    name = SITES["one"][0]
    webroot = tmp_path / "htdocs"
    webroot.mkdir()
    (webroot / ".well-known").write_text("a stray file where the directory belongs\n")
    add_row(store, [name], webroot=webroot)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    assert_failed_untouched(store, report, name, f"{webroot}/.well-known", "not a directory")
    assert leftovers(webroot) == [".well-known"]
    assert (webroot / ".well-known").read_text().startswith("a stray file")


def test_webroot_not_writable_for_the_user_running_lecentral(tmp_path_factory: Any) -> None:
    """A real EACCES: as root, a child process drops to nobody (root may write anywhere)."""
    import tempfile

    from lecentral.errors import IssueError
    from lecentral.http01.webroot import ChallengeDirs

    base = Path(tempfile.mkdtemp(prefix="lecentral-ro-webroot-"))
    try:
        webroot = base / "htdocs"
        webroot.mkdir()
        os.chmod(base, 0o755)
        os.chmod(webroot, 0o755 if os.geteuid() == 0 else 0o555)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become an unprivileged user, try, report, exit
            try:
                os.close(read)
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                try:
                    with ChallengeDirs().open(webroot):
                        text = "no error"
                except IssueError as exc:
                    text = str(exc)
                os.write(write, text.encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            message = pipe.read()
        os.waitpid(pid, 0)
        assert f"webroot {webroot} is not writable here" in message, message
        assert f"cannot create {webroot}/.well-known" in message and "Permission denied" in message
        assert "fix the permissions" in message
        assert leftovers(webroot) == []
    finally:
        import shutil

        os.chmod(base / "htdocs", 0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("issuer", ISSUERS)
def test_wildcard_name_refused_for_http01(web_world: WebWorld, store: SqlStore, tmp_path: Path,
                                          issuer: str) -> None:
    names = ["one.web.test", "*.one.web.test"]
    webroot = web_world.webroot("one")
    add_row(store, names, webroot=webroot)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    assert_failed_untouched(store, report, names[0], "*.one.web.test", "DNS-01")
    assert leftovers(webroot) == []


def test_two_certificates_of_one_site_in_one_pass(web_world: WebWorld, store: SqlStore,
                                                  tmp_path: Path) -> None:
    """Two rows, one webroot, issued concurrently: neither removes the other's directory."""
    webroot = web_world.webroot("shared")
    first, second = SITES["shared"]
    _, key1 = add_row(store, [first], webroot=webroot)
    _, key2 = add_row(store, [second], webroot=webroot)
    report = run(make_config(web_world, tmp_path), store)
    assert [o.status for o in report.final] == ["issued", "issued"]
    assert_issued(store, first, [first], key1)
    assert_issued(store, second, [second], key2)
    assert leftovers(webroot) == []


def test_redirect_to_another_name_is_followed_like_the_ca_does(web_world: WebWorld,
                                                                store: SqlStore,
                                                                tmp_path: Path) -> None:
    """moved.web.test answers 301 to one.web.test: the self-check and the CA both follow it."""
    webroot = web_world.webroot("one")
    _, key = add_row(store, ["moved.web.test"], webroot=webroot)
    report = run(make_config(web_world, tmp_path), store)
    assert report.final[0].status == "issued", report.final[0].message
    assert_issued(store, "moved.web.test", ["moved.web.test"], key)
    assert leftovers(webroot) == []


def test_existing_challenge_directory_is_kept(web_world: WebWorld, store: SqlStore,
                                              tmp_path: Path) -> None:
    """A site that has .well-known/ (security.txt...) keeps it and its files."""
    name = SITES["one"][0]
    webroot = web_world.webroot("one")
    (webroot / ".well-known").mkdir()
    (webroot / ".well-known" / "security.txt").write_text("Contact: mailto:hostmaster@web.test\n")
    try:
        _, key = add_row(store, [name], webroot=webroot)
        report = run(make_config(web_world, tmp_path), store)
        assert report.final[0].status == "issued"
        assert_issued(store, name, [name], key)
        assert leftovers(webroot) == [".well-known", ".well-known/security.txt"]
    finally:
        (webroot / ".well-known" / "security.txt").unlink()
        (webroot / ".well-known").rmdir()


def test_challenge_file_modes(web_world: WebWorld, tmp_path: Path) -> None:
    """Token files 0644 and created directories 0755 whatever the umask; removed on exit."""
    from lecentral.http01.webroot import ChallengeDirs

    webroot = tmp_path / "htdocs"
    webroot.mkdir()
    old = os.umask(0o077)
    try:
        with ChallengeDirs().open(webroot) as files:
            path = files.write("tok-en_1", "tok-en_1.thumbprint")
            assert path.read_text() == "tok-en_1.thumbprint"
            assert path.stat().st_mode & 0o777 == 0o644
            assert (webroot / ".well-known").stat().st_mode & 0o777 == 0o755
            assert (webroot / ".well-known" / "acme-challenge").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)
    assert leftovers(webroot) == []


def test_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    """A token name planted as a symlink by the site's content is refused, never written through."""
    from lecentral.errors import IssueError
    from lecentral.http01.webroot import ChallengeDirs

    webroot = tmp_path / "htdocs"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (webroot / ".well-known" / "acme-challenge" / "tok").symlink_to(target)
    with pytest.raises(IssueError, match="is not writable here"), \
            ChallengeDirs().open(webroot) as files:
        files.write("tok", "tok.thumbprint")
    assert target.read_text() == "keep me\n"
    assert (webroot / ".well-known" / "acme-challenge" / "tok").is_symlink()


@pytest.mark.parametrize("issuer", ISSUERS)
def test_seed_csr_with_its_cn_outside_the_sans(web_world: WebWorld, store: SqlStore,
                                               tmp_path: Path, issuer: str) -> None:
    """Issue 14: the seed's documented CSR (CN one name, subjectAltName the other only) is
    ordered with both names (certbot --csr does so itself; the webroot issuer as lecentral
    reads the CSR), both proved over HTTP-01; Pebble reads the SANs only and refuses it at
    finalization: the failure says so and what to do, nothing stored."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    from lecentral_testing.central import new_row
    from lecentral_testing.pki import make_key

    cn, san = SITES["san"]
    pem = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
           .sign(make_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    store.add(new_row(pem, certbot=True, webroot_path=str(web_world.webroot("san"))))
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    message = assert_failed_untouched(
        store, report, cn, "Order includes different number of DNSnames identifiers than CSR "
        "specifies", f"the CSR's CN {cn} is not among its subjectAltNames: lecentral orders it "
        "with them, as certbot does and Let's Encrypt certifies, but this CA takes a CSR's names "
        "from its subjectAltName extension only (Pebble does) and refuses the CSR; make a CSR "
        "with every name in subjectAltName")
    if issuer == "webroot":  # lecentral's own client: the failing step, and the ordered names
        ordered = message.removeprefix("finalizing the order for ").split(": ", 1)
        assert sorted(ordered[0].split(", ")) == sorted([cn, san]), message  # in the CA's order
        assert ordered[1].startswith("the CA answered unauthorized: "), message
        assert "check [acme]" not in message, message
    else:  # certbot does not say at which step the CA refused
        assert "if the CA refused the CSR itself: the CSR's CN" in message, message
    assert leftovers(web_world.webroot("san")) == []
