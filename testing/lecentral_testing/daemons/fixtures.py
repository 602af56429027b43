"""Pytest fixtures for the real TLS daemons (loaded by :mod:`lecentral_testing.pytest_plugin`).

Session-scoped, one daemon of each kind, started on first use::

    def test_something(nginx_server, cert_files_factory):
        new = cert_files_factory(["www.example.test"])
        fingerprint = nginx_server.put_certificate(new)
        nginx_server.reload(expect=fingerprint)

The session daemons are shared: a test that puts another certificate in place leaves it there, so
never assume which certificate a session daemon presents when a test starts (read it with
``server.presented_fingerprint("https")``, or use :func:`tls_daemon_factory` for a private one).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lecentral_testing.daemons.apache import ApacheServer
from lecentral_testing.daemons.base import TlsServer
from lecentral_testing.daemons.certs import CertFiles, write_cert_files
from lecentral_testing.daemons.dovecot import DovecotServer
from lecentral_testing.daemons.nginx import NginxServer
from lecentral_testing.daemons.postfix import PostfixServer
from lecentral_testing.daemons.slapd import SlapdServer

S = TypeVar("S", bound=TlsServer)
CertFilesFactory = Callable[..., CertFiles]


@pytest.fixture(scope="session")
def cert_files_factory(tmp_path_factory: pytest.TempPathFactory) -> CertFilesFactory:
    """``make(names=("localhost",), key_kind="ec256", days=30) -> CertFiles``: a new self-signed
    key and certificate in a directory of their own (key 0600)."""
    base = tmp_path_factory.mktemp("cert-files")
    counter = itertools.count(1)

    def make(names: Sequence[str] = ("localhost",), key_kind: str = "ec256", days: int = 30) -> CertFiles:
        return write_cert_files(base / f"set{next(counter)}", names, key_kind=key_kind, days=days)

    return make


def _serve(factory: pytest.TempPathFactory, cls: type[S], **kwargs: Any) -> Iterator[S]:
    """Start ``cls`` in a new session temp dir named after its kind; stop it at the end."""
    with cls(factory.mktemp(cls.kind), **kwargs) as server:
        yield server


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory,
                 cert_files_factory: CertFilesFactory) -> Iterator[NginxServer]:
    """nginx on 127.0.0.1: ``verify_urls["https"]``; its ``cert`` file holds leaf + chain."""
    files = cert_files_factory()
    yield from _serve(tmp_path_factory, NginxServer, cert=files.fullchain, key=files.key)


@pytest.fixture(scope="session")
def apache_server(tmp_path_factory: pytest.TempPathFactory,
                  cert_files_factory: CertFilesFactory) -> Iterator[ApacheServer]:
    """apache2 on 127.0.0.1 with cert, key and chain files: ``verify_urls["https"]``."""
    files = cert_files_factory()
    yield from _serve(tmp_path_factory, ApacheServer, cert=files.cert, key=files.key, chain=files.chain)


@pytest.fixture(scope="session")
def postfix_server(tmp_path_factory: pytest.TempPathFactory,
                   cert_files_factory: CertFilesFactory) -> Iterator[PostfixServer]:
    """Postfix on 127.0.0.1: ``verify_urls["smtp"]`` (STARTTLS), ``["smtps"]``, and ``plain_url``."""
    files = cert_files_factory(["mail.example.test"])
    yield from _serve(tmp_path_factory, PostfixServer, cert=files.cert, key=files.key, chain=files.chain)


@pytest.fixture(scope="session")
def dovecot_server(tmp_path_factory: pytest.TempPathFactory,
                   cert_files_factory: CertFilesFactory) -> Iterator[DovecotServer]:
    """Dovecot on 127.0.0.1: ``verify_urls["imap"|"imaps"|"pop3"|"pop3s"]``; ``cert`` is leaf + chain."""
    files = cert_files_factory(["mail.example.test"])
    yield from _serve(tmp_path_factory, DovecotServer, cert=files.fullchain, key=files.key)


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory: pytest.TempPathFactory,
                 cert_files_factory: CertFilesFactory) -> Iterator[SlapdServer]:
    """slapd on 127.0.0.1: ``verify_urls["ldap"|"ldaps"]``, ``ldap_url``, ``ldapi_url`` (root: manage cn=config)."""
    files = cert_files_factory(["ldap.example.test"])
    yield from _serve(tmp_path_factory, SlapdServer, cert=files.cert, key=files.key, chain=files.chain)


@pytest.fixture
def tls_daemon_factory(tmp_path: Path, cert_files_factory: CertFilesFactory) -> Iterator[Callable[..., Any]]:
    """``start(LauncherClass, **kwargs)``: a private daemon, stopped when the test ends.

    ``cert``/``key`` default to fresh self-signed files; the workdir is under the test's tmp_path.
    """
    started: list[TlsServer] = []

    def start(cls: type[S], **kwargs: Any) -> S:
        if "cert" not in kwargs:
            files = cert_files_factory()
            kwargs.update(cert=files.fullchain, key=files.key)
        server = cls(tmp_path / f"{cls.kind}-{len(started) + 1}", **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.close()
