"""The acme library's ClientNetwork made safe for concurrent workers and patient with badNonce.

Why a subclass: :class:`acme.client.ClientNetwork` keeps its replay nonces in a plain ``set`` and
``_get_nonce`` does check-then-pop, so two threads can both see one nonce and one of them gets a
``KeyError`` from ``pop()``; it also retries a ``badNonce`` only once and drops the fresh nonce that
comes with every error response. Here:

* the nonce pool is guarded by a lock, and a nonce fetched with HEAD newNonce goes straight to the
  thread that asked for it;
* every response's ``Replay-Nonce`` is kept, error responses included (RFC 8555 §6.5: a badNonce
  answer carries a fresh nonce, so the retry costs no extra round trip);
* ``badNonce`` is retried up to ``bad_nonce_attempts`` times for every POST: order, authorization,
  challenge, finalize, download and account alike;
* a problem document keeps the response's ``Retry-After`` (as ``problem.retry_after``), so a
  ``rateLimited`` error can say when to try again;
* a 409 Conflict that carries a problem document (RFC 9773's ``alreadyReplaced`` for a newOrder
  whose ``replaces`` was used already) is that problem, not the library's bare ``ConflictError``
  (which drops the type and detail the order's retry without ``replaces`` depends on);
* the per-request costs that are the same at every request are paid once (a certificate is
  7-8 requests, a renew run hundreds): the environment's proxy and CA-bundle settings are read
  once per CA host (:class:`SettledSession`), and the JWS is written as compact JSON (the
  library indents it, which takes the pure-Python JSON encoder; the CA reads either);
* the JWS of an account's request (``kid``: every request but the account's own registration) is
  put together here, signed by the library's algorithm: the library builds three josepy objects
  per request, serialises its header twice and parses it back (0.1 ms of a signed POST's 0.9 ms
  of client CPU; 0.045 ms here); the fields sent and the way they are signed are the same;
* the ``.netrc`` requests would read for a host at every request is looked for once per host, and
  the session's and the request's headers are merged without requests' Protocol checks;
* the library's debug lines of every request and answer are formatted only when logged.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from acme import errors as acme_errors
from acme import jws, messages
from acme.client import ClientNetwork
from josepy.errors import DeserializationError
from josepy.interfaces import JSONDeSerializable
from josepy.jwa import JWASignature
from josepy.jwk import JWK
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar, cookiejar_from_dict, merge_cookies
from requests.sessions import merge_hooks, merge_setting
from requests.structures import CaseInsensitiveDict
from requests.utils import get_netrc_auth

log = logging.getLogger(__name__)
#: the acme library's own logger (its requests and answers, at DEBUG)
_acme_log = logging.getLogger("acme.client")

#: how many times one POST is tried when the CA keeps answering badNonce
BAD_NONCE_ATTEMPTS = 25


class SettledSession(requests.Session):
    """A requests session that reads the environment's settings once per scheme and host.

    requests looks at the environment at every request (``merge_environment_settings``): the
    proxies of ``*_proxy``, ``no_proxy`` (walking the whole environment twice) and the CA bundle
    of ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``: about a fifth of the client's CPU for one ACME
    request. The environment does not change during a run, so the answer for a host is kept:
    the same proxies, bypasses and bundle as before, asked for once."""

    def __init__(self) -> None:
        super().__init__()
        self._settled: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._netrc: dict[tuple[str, str], Any] = {}

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """What :meth:`requests.Session.prepare_request` does (requests 2.x), with the ``.netrc``
        credentials for a host looked for once: requests stats ``~/.netrc`` and ``~/_netrc`` (and
        reads the file, when there is one) at every request; headers and parameters merged as
        :func:`_merge` says."""
        url, method = cast(str, request.url), cast(str, request.method)
        cookies = request.cookies or {}
        if not isinstance(cookies, http.cookiejar.CookieJar):
            cookies = cookiejar_from_dict(cookies)
        merged_cookies = merge_cookies(merge_cookies(RequestsCookieJar(), self.cookies), cookies)
        auth = request.auth
        if self.trust_env and not auth and not self.auth:
            parts = urlsplit(url)
            key = (parts.scheme, parts.netloc)
            try:
                auth = self._netrc[key]
            except KeyError:
                auth = self._netrc[key] = get_netrc_auth(url)
        # no parameters (an ACME request has none): requests encodes an empty mapping as "", after
        # two more of those Protocol checks; "" is that answer at once
        params = _merge(request.params, self.params, OrderedDict) or ""
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=method.upper(), url=url, files=request.files, data=request.data,
            json=request.json,
            headers=_merge(request.headers, self.headers, CaseInsensitiveDict),
            params=params,
            auth=merge_setting(auth, self.auth), cookies=merged_cookies,
            hooks=merge_hooks(request.hooks, self.hooks))
        return prepared

    def merge_environment_settings(self, url: str, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if proxies or not self.trust_env:  # explicit proxies, or no environment: as requests does
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify, cert, self.stream, self.verify,
               self.cert, tuple(sorted(self.proxies.items())))
        settled = self._settled.get(key)
        if settled is None:
            settled = super().merge_environment_settings(url, {}, stream, verify, cert)
            self._settled[key] = settled
        return {**settled, "proxies": dict(settled["proxies"])}


class SafeNetwork(ClientNetwork):
    """A :class:`ClientNetwork` shared by all renew workers of one process."""

    def __init__(self, key: JWK, *, alg: JWASignature, verify: bool | str,
                 user_agent: str, timeout: int = 45, pool_size: int = 10,
                 bad_nonce_attempts: int = BAD_NONCE_ATTEMPTS) -> None:
        super().__init__(key, alg=alg, verify_ssl=True, user_agent=user_agent, timeout=timeout)
        self.session.close()  # the library's plain session: nothing sent through it yet
        self.session = SettledSession()
        # requests takes a CA bundle path wherever it takes verify=True
        self.verify_ssl = verify  # type: ignore[assignment]
        self.bad_nonce_attempts = bad_nonce_attempts
        self._nonce_lock = threading.Lock()
        # one connection per worker, so workers never queue behind each other for a socket
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 10))
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.bad_nonces_seen = 0

    def _wrap_in_jws(self, obj: JSONDeSerializable, nonce: str, url: str) -> str:
        """The JWS of ``obj`` as compact JSON: the library's fields (RFC 8555 §6.2: alg, nonce,
        url and kid, all protected) signed by the library's algorithm. The account's own
        registration (a ``jwk`` header instead of ``kid``) is left to the library."""
        payload = obj.json_dumps().encode() if obj else b""
        kid = self.account["uri"] if self.account is not None else None
        if kid is None or self.key is None:
            # the library passes the nonce as the str it is, against its own annotation (bytes)
            signed = jws.JWS.sign(payload, key=self.key, alg=self.alg,
                                  nonce=nonce,  # type: ignore[arg-type]
                                  url=url, kid=None)
            return cast(str, signed.json_dumps())
        # the nonce is the decoded bytes of the Replay-Nonce (as the library keeps it); the
        # header carries it base64url-encoded again, as the library's Header field encodes it
        raw_nonce = nonce if isinstance(nonce, bytes) else nonce.encode()
        protected = _b64(json.dumps(
            {"alg": self.alg.name, "nonce": _b64(raw_nonce).decode(), "url": url,
             "kid": kid}, separators=(",", ":")).encode())
        encoded_payload = _b64(payload)
        signature = self.alg.sign(self.key.key, protected + b"." + encoded_payload)
        return json.dumps({"protected": protected.decode(), "payload": encoded_payload.decode(),
                           "signature": _b64(signature).decode()}, separators=(",", ":"))

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        """The library's request (the CA bundle, the user agent, the timeout, UTF-8 answers but
        for an ``Accept``), without its debug lines when they are not logged: it formats every
        response's headers and decodes (or base64-encodes) its body for them either way."""
        if _acme_log.isEnabledFor(logging.DEBUG):
            return super()._send_request(method, url, *args, **kwargs)
        kwargs["verify"] = self.verify_ssl
        kwargs.setdefault("headers", {})
        kwargs["headers"].setdefault("User-Agent", self.user_agent)
        kwargs.setdefault("timeout", self._default_timeout)
        response: requests.Response = self.session.request(method, url, *args, **kwargs)
        if "Accept" not in kwargs["headers"]:
            response.encoding = "utf-8"  # as the library sets it: .text is not guessed
        return response

    @staticmethod
    def _decode_nonce(response: requests.Response) -> str | None:
        value = response.headers.get(ClientNetwork.REPLAY_NONCE_HEADER)
        if value is None:
            return None
        try:
            decoded: str = jws.Header._fields["nonce"].decode(value)
        except DeserializationError as exc:
            raise acme_errors.BadNonce(value, exc) from None
        return decoded

    def _add_nonce(self, response: requests.Response) -> None:
        nonce = self._decode_nonce(response)
        if nonce is None:
            raise acme_errors.MissingNonce(response)
        with self._nonce_lock:
            self._nonces.add(nonce)

    def _get_nonce(self, url: str, new_nonce_url: str) -> str:
        with self._nonce_lock:
            if self._nonces:
                return self._nonces.pop()
        response = self._check_response(self.head(new_nonce_url or url), content_type=None)
        nonce = self._decode_nonce(response)
        if nonce is None:
            raise acme_errors.MissingNonce(response)
        return nonce

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        """POST a JWS-signed object; ``badNonce`` is retried (bounded), other problems raise."""
        attempt = 1
        while True:
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as problem:
                if problem.code != "badNonce" or attempt >= self.bad_nonce_attempts:
                    raise
                self.bad_nonces_seen += 1
                log.debug("badNonce from the CA (attempt %d of %d); retrying with a fresh nonce",
                          attempt, self.bad_nonce_attempts)
                attempt += 1

    @classmethod
    def _check_response(cls, response: requests.Response,
                        content_type: str | None = None) -> requests.Response:
        if response.status_code == 409:
            try:
                jobj = response.json()
            except ValueError:
                jobj = None
            if isinstance(jobj, dict) and jobj.get("type"):
                try:
                    problem = messages.Error.from_json(jobj)
                except DeserializationError:
                    pass
                else:
                    raise problem
        checked: requests.Response = super()._check_response(response, content_type=content_type)
        return checked

    def _post_once(self, url: str, obj: JSONDeSerializable,
                   content_type: str = ClientNetwork.JOSE_CONTENT_TYPE,
                   **kwargs: Any) -> requests.Response:
        new_nonce_url = kwargs.pop("new_nonce_url", None)
        data = self._wrap_in_jws(obj, self._get_nonce(url, new_nonce_url), url).encode()
        kwargs.setdefault("headers", {"Content-Type": content_type})
        response = self._send_request("POST", url, data=data, **kwargs)
        if self.REPLAY_NONCE_HEADER in response.headers:
            self._add_nonce(response)
        try:
            return self._check_response(response, content_type=content_type)
        except messages.Error as problem:
            problem.retry_after = response.headers.get("Retry-After")
            raise


def _b64(data: bytes) -> bytes:
    """base64url without padding (RFC 7515 §2), as josepy's ``b64encode``."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _merge(request_setting: Any, session_setting: Any, dict_class: type) -> Any:
    """:func:`requests.sessions.merge_setting` for two mappings (the headers, the parameters):
    the same merge, the request's values over the session's and the ``None`` ones dropped, with
    their ``items()`` read directly. requests reads them through ``to_key_val_list``, which asks
    a runtime-checkable Protocol whether a mapping has ``items()``: about 5 us each time on
    Python 3.11, four times a request. Anything else goes to requests' own."""
    if isinstance(session_setting, Mapping) and isinstance(request_setting, Mapping):
        merged = dict_class(session_setting.items())
        merged.update(request_setting.items())
        for key in [k for k, v in merged.items() if v is None]:
            del merged[key]
        return merged
    return merge_setting(request_setting, session_setting, dict_class=dict_class)
