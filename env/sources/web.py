"""The live web as a page source: httpx behind an SSRF guard, with hard byte and time caps.

The model chooses every URL fetched here, so each fetch is treated as hostile: only http(s);
every hop (the first URL and each redirect) is resolved and refused if any address is not public;
the connection goes to the address that was checked (no second DNS lookup an attacker could
rebind); the body is streamed and cut at `FetchLimits.max_bytes`; every socket read is bounded by
the fetch's wall-clock deadline, so a server that drips one byte a second cannot stall us.
Pages are parsed, never executed.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from env.errors import (
    BlockedURL,
    FetchError,
    PageError,
    PageTooLarge,
    SearchError,
    UnsupportedContent,
)
from env.limits import FetchLimits, RenderLimits
from env.pages import Page, bytes_to_page

if TYPE_CHECKING:
    from env.sources.base import Searcher, SearchHit

DEFAULT_USER_AGENT = "webagent/0.1 (+offline-first research agent)"
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain", "application/pdf", ""})
"""Content types `LiveWeb.get` renders ('' = not given: sniffed by `bytes_to_page`)."""
_REDIRECTS = {301, 302, 303, 307, 308}
_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/pdf;q=0.8,*/*;q=0.1"
# NAT64 (RFC 6052) prefix: an IPv6 address here reaches the IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# ----------------------------------------------------------------------------- SSRF guard


def _blocked_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why this address must not be fetched, or None for a public unicast address."""
    for flag in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{flag}"):
            return flag.replace("_", "-")
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for v4 in embedded:
            if v4 is not None and (reason := _blocked_reason(v4)):
                return f"{reason} (embedded in {ip})"
    if not ip.is_global:  # shared (100.64/10), benchmarking, documentation ranges, ...
        return "non-global"
    return None


def _split_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL without credentials; BlockedURL for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BlockedURL(f"{url}: not a valid URL ({exc})") from None
    if parts.scheme not in {"http", "https"}:
        raise BlockedURL(f"{url}: only http and https URLs can be fetched")
    if parts.username is not None or parts.password is not None:
        raise BlockedURL(f"{url}: URLs with credentials are refused")
    if not parts.hostname:
        raise BlockedURL(f"{url}: no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _host_allowed(host: str, allow_hosts: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == h.lower().strip("[]").rstrip(".") for h in allow_hosts)


def resolve_checked(
    host: str, port: int, *, allow_private: bool = False, allow_hosts: Sequence[str] = ()
) -> list[str]:
    """Resolve `host` and return its addresses; BlockedURL if ANY of them is not public.

    Refusing when any (not only the first) address is private stops a name that lists both a
    public and an internal address. `allow_hosts` matches the host as written in the URL
    ('127.0.0.1', 'localhost'), not what it resolves to.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"{host}: cannot resolve host ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise FetchError(f"{host}: host has no addresses")
    if allow_private or _host_allowed(host, allow_hosts):
        return addresses
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        if reason := _blocked_reason(ip):
            raise BlockedURL(f"{host} resolves to {ip}, a {reason} address: refused")
    return addresses


def check_url(url: str, *, allow_private: bool = False, allow_hosts: Sequence[str] = ()) -> None:
    """Raise BlockedURL unless `url` is http(s), has no credentials and resolves to public IPs.

    This is the check in one call (for callers that only want a verdict). `LiveWeb` runs the
    same two steps, but the address check at connect time on the very addresses it then
    connects to, so a DNS answer cannot change between check and connect (DNS rebinding).
    """
    host, port = _split_url(url)
    resolve_checked(host, port, allow_private=allow_private, allow_hosts=allow_hosts)


# ----------------------------------------------------------------------------- transport


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float):
        self._inner = inner
        self._deadline = deadline

    def _timeout(self, timeout: float | None, error: type[Exception]) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise error("fetch deadline passed")
        return min(remaining, timeout if timeout is not None else math.inf)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(
            ssl_context, server_hostname, self._timeout(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves, checks and connects in one place: the socket goes to an address just checked.

    httpcore asks the backend for a TCP connection to (host, port); we resolve the host once,
    refuse it unless every address is public, then connect to those literal addresses. TLS
    still verifies the certificate for the URL's host name (httpcore passes it as SNI), and the
    Host header is the URL's, so virtual hosting works as usual.
    """

    def __init__(self, deadline: float, allow_private: bool, allow_hosts: Sequence[str]):
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline
        self._allow_private = allow_private
        self._allow_hosts = tuple(allow_hosts)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve_checked(
            host, port, allow_private=self._allow_private, allow_hosts=self._allow_hosts
        )
        error: Exception = httpcore.ConnectError(f"cannot connect to {host}")
        for address in addresses[:4]:  # e.g. an unreachable IPv6 address before the IPv4 one
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise httpcore.ConnectTimeout("fetch deadline passed")
            wait = min(remaining, timeout if timeout is not None else math.inf)
            try:
                stream = self._inner.connect_tcp(
                    address, port, wait, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        raise error

    def connect_unix_socket(self, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]):
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


class _GuardedTransport(httpx.BaseTransport):
    """httpx transport over an httpcore pool that uses `_GuardedBackend` (no proxies, no env)."""

    def __init__(self, backend: _GuardedBackend, ssl_context: ssl.SSLContext):
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, network_backend=backend, max_connections=4
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


# ----------------------------------------------------------------------------- fetching

_NETWORK_ERRORS = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    ssl.SSLError,
    OSError,
)
_TIMEOUTS = (httpx.TimeoutException, httpcore.TimeoutException, TimeoutError)
_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One verifying context per process (loading the CA bundle costs ~20 ms)."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


@dataclass(frozen=True)
class Fetched:
    """A fetched body: `url` is the final URL after redirects, `body` is decoded (gzip undone)."""

    url: str
    status: int
    content_type: str
    body: bytes
    redirects: tuple[str, ...]
    fetched_at: float


def fetch(
    url: str,
    *,
    limits: FetchLimits = FetchLimits(),
    allow_private: bool = False,
    allow_hosts: Sequence[str] = (),
    user_agent: str = DEFAULT_USER_AGENT,
    accept: str = _ACCEPT,
    content_type_ok: Callable[[str], bool] = lambda ctype: True,
) -> Fetched:
    """GET `url` within `limits`, following redirects by hand so each hop meets the guard.

    Raises BlockedURL (guard), FetchError (network, timeout, HTTP status >= 400, redirects),
    PageTooLarge (body or Content-Length over `limits.max_bytes`) and UnsupportedContent (when
    `content_type_ok` rejects the media type; checked before the body is read).
    """
    url = url.strip().split("#", 1)[0]  # the fragment is the browser's business, not the server's
    start = time.monotonic()
    deadline = start + limits.total_timeout_seconds
    timeout = httpx.Timeout(
        connect=limits.connect_timeout_seconds,
        read=limits.read_timeout_seconds,
        write=limits.read_timeout_seconds,
        pool=limits.connect_timeout_seconds,
    )
    backend = _GuardedBackend(deadline, allow_private, allow_hosts)
    headers = {"User-Agent": user_agent, "Accept": accept, "Accept-Encoding": "gzip, deflate"}
    seen: list[str] = []
    client = httpx.Client(
        transport=_GuardedTransport(backend, _ssl_context()),
        timeout=timeout,
        headers=headers,
        follow_redirects=False,
        trust_env=False,  # trust_env: no proxy may bypass the guard
    )
    try:
        with client:
            while True:
                _split_url(url)  # scheme and credentials; addresses are checked at connect
                seen.append(url)
                with client.stream("GET", url) as response:
                    if response.status_code in _REDIRECTS:
                        url = _next_hop(url, response, seen, limits)
                        continue
                    return _read_body(url, response, seen, limits, deadline, content_type_ok)
    except _TIMEOUTS:
        elapsed = time.monotonic() - start
        raise FetchError(f"{url}: timed out after {elapsed:.1f} s") from None
    except _NETWORK_ERRORS as exc:
        if time.monotonic() >= deadline:
            raise FetchError(f"{url}: timed out after {limits.total_timeout_seconds:g} s") from None
        raise FetchError(f"{url}: {type(exc).__name__}: {exc or 'connection failed'}") from None


def _next_hop(url: str, response: httpx.Response, seen: list[str], limits: FetchLimits) -> str:
    location = response.headers.get("location", "").strip()
    if not location:
        raise FetchError(f"{url}: HTTP {response.status_code} redirect without a Location")
    target = urljoin(url, location).split("#", 1)[0]
    if target in seen:
        raise FetchError(f"{url}: redirect loop ({' -> '.join([*seen, target])})")
    if len(seen) > limits.max_redirects:
        raise FetchError(f"{seen[0]}: more than {limits.max_redirects} redirects")
    return target


def _read_body(
    url: str,
    response: httpx.Response,
    seen: list[str],
    limits: FetchLimits,
    deadline: float,
    content_type_ok: Callable[[str], bool],
) -> Fetched:
    status = response.status_code
    if status >= 400:
        reason = response.reason_phrase or "error"
        raise FetchError(f"{url}: HTTP {status} {reason}")
    content_type = response.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if not content_type_ok(media_type):
        raise UnsupportedContent(f"{url}: content type {media_type!r} is not a web page")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise PageTooLarge(f"{url}: {declared} bytes declared, over {limits.max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():  # gzip/deflate undone; we count what we would keep
        size += len(chunk)
        if size > limits.max_bytes:
            raise PageTooLarge(f"{url}: body over {limits.max_bytes} bytes")
        chunks.append(chunk)
        if time.monotonic() >= deadline:  # reads are bounded too; this ends between chunks
            raise FetchError(f"{url}: timed out after {limits.total_timeout_seconds:g} s")
    return Fetched(
        url=url,
        status=status,
        content_type=content_type,
        body=b"".join(chunks),
        redirects=tuple(seen[:-1]),
        fetched_at=time.time(),
    )


# ----------------------------------------------------------------------------- the source


class GuardedClient:
    """A client of outside URLs (`LiveWeb`'s pages, `SearxSearch`'s endpoint): the guard's
    settings, and `fetch` with them, written once."""

    def __init__(
        self,
        *,
        limits: FetchLimits = FetchLimits(),
        allow_private: bool = False,
        allow_hosts: Sequence[str] = (),
        user_agent: str = DEFAULT_USER_AGENT,
    ):
        self.limits = limits
        self.allow_private = allow_private
        self.allow_hosts = tuple(allow_hosts)
        self.user_agent = user_agent

    def fetch(self, url: str, **options: Any) -> Fetched:
        """`fetch(url)` under this client's guard; `options` are fetch's others (`accept`,
        `content_type_ok`)."""
        return fetch(
            url,
            limits=self.limits,
            allow_private=self.allow_private,
            allow_hosts=self.allow_hosts,
            user_agent=self.user_agent,
            **options,
        )


class LiveWeb(GuardedClient):
    """PageSource over the live web; search goes through a SearxNG instance when configured."""

    name = "web"

    def __init__(
        self,
        search: Searcher | None = None,
        *,
        limits: FetchLimits = FetchLimits(),
        render: RenderLimits = RenderLimits(),
        allow_private: bool = False,
        allow_hosts: Sequence[str] = (),
        user_agent: str = DEFAULT_USER_AGENT,
    ):
        super().__init__(
            limits=limits,
            allow_private=allow_private,
            allow_hosts=allow_hosts,
            user_agent=user_agent,
        )
        self.searcher = search
        self.render = render

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        if self.searcher is None:
            raise SearchError(
                "live search needs a SearxNG endpoint: run a SearxNG instance with the JSON "
                "format enabled (settings.yml: search.formats: [html, json]), then set "
                "WEBAGENT_SEARX_URL=http://host:8888 or pass "
                "LiveWeb(search=SearxSearch('http://host:8888')); an instance on this machine "
                "also needs allow_hosts=['127.0.0.1'] (or allow_private=True)"
            )
        return self.searcher.search(query, k)

    def get(self, url: str) -> Page:
        fetched = self.fetch(url, content_type_ok=lambda ctype: ctype in PAGE_TYPES)
        try:
            page = bytes_to_page(
                fetched.body,
                fetched.url,
                fetched.content_type,
                main_content=True,
                limits=self.render,
            )
        except PageError:
            raise
        except Exception as exc:  # a renderer bug must not crash the browser on one bad page
            raise UnsupportedContent(
                f"{fetched.url}: cannot render ({type(exc).__name__})"
            ) from exc
        page.meta.update(
            source=self.name,
            raw=fetched.body,
            content_type=fetched.content_type,
            final_url=fetched.url,
            fetched_at=fetched.fetched_at,
            redirects=list(fetched.redirects),
        )
        return page
