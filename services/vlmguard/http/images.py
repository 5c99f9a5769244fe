"""``image_url`` parts: data URLs, and (only when enabled) remote URLs fetched safely.

A remote URL is fetched by the front door itself, and the bytes it checked are what the
upstream gets (as a data URL), so the model never sees a different image than the guard did.
The fetch refuses, with INVALID_ARGUMENT/IMAGE_URL_NOT_ALLOWED:

- every remote URL while ``http.remote_images.enabled`` is false (the default);
- schemes other than https (http too when ``allow_http``), URLs with credentials;
- hosts outside ``allow_hosts`` (exact names or ``*.suffix``);
- hosts that resolve to any private, loopback, link-local, multicast, reserved or otherwise
  non-global address. Resolution and the check happen when the connection is opened, and the
  connection goes to the address that was checked, so a DNS answer cannot change in between;
- redirects (at most ``max_redirects``) whose target fails any of the above.

Size (``max_bytes`` and ``limits.max_image_bytes``) and time (``timeout_s``, and the request's
deadline) are bounded; environment proxies are ignored (a proxy would connect for us, unchecked).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpcore
import httpx

from vlmguard.config import LimitsConfig, RemoteImagesConfig
from vlmguard.domain import ImageInput
from vlmguard.errors import InvalidArgumentError, Reason

#: Resolves (host, port) to IP address strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]


def _not_allowed(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message, reason=Reason.IMAGE_URL_NOT_ALLOWED)


def _fetch_failed(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message, reason=Reason.IMAGE_FETCH_FAILED)


def is_public_address(ip: str) -> bool:
    """True only for a globally routable unicast address (IPv4-mapped IPv6 judged as IPv4)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return bool(addr.is_global and not (addr.is_multicast or addr.is_reserved
                                        or addr.is_loopback or addr.is_link_local
                                        or addr.is_private or addr.is_unspecified))


def host_allowed(host: str, allow_hosts: Iterable[str]) -> bool:
    """Whether ``host`` matches an entry: an exact name, or ``*.suffix`` for its subdomains."""
    h = host.lower().rstrip(".")
    for entry in allow_hosts:
        e = entry.lower().strip().rstrip(".")
        if e.startswith("*."):
            if h.endswith(e[1:]) and len(h) > len(e) - 1:
                return True
        elif h == e:
            return True
    return False


def decode_data_url(url: str, limits: LimitsConfig) -> ImageInput:
    """The image in a ``data:`` URL (size checked before decoding).

    Raises:
        InvalidArgumentError: MALFORMED_REQUEST (not a data URL, bad base64), IMAGE_TOO_LARGE.
    """
    head, sep, payload = url.partition(",")
    if not sep or not head.lower().startswith("data:"):
        raise InvalidArgumentError("image_url: not a valid data URL",
                                   reason=Reason.MALFORMED_REQUEST)
    params = head[5:].split(";")
    mime = params[0].strip().lower()
    is_b64 = any(p.strip().lower() == "base64" for p in params[1:])
    limit = limits.max_image_bytes
    too_big = ((len(payload) * 3) // 4 > limit + 3) if is_b64 else len(payload) > 3 * limit
    if too_big:
        raise InvalidArgumentError(f"image_url: the image is larger than {limit} bytes",
                                   reason=Reason.IMAGE_TOO_LARGE)
    try:
        data = (base64.b64decode(payload, validate=True) if is_b64
                else unquote_to_bytes(payload))
    except (binascii.Error, ValueError) as e:
        raise InvalidArgumentError("image_url: the data URL is not valid base64",
                                   reason=Reason.MALFORMED_REQUEST) from e
    if len(data) > limit:
        raise InvalidArgumentError(f"image_url: the image is larger than {limit} bytes",
                                   reason=Reason.IMAGE_TOO_LARGE)
    return ImageInput(data=data, mime_type=mime if mime.startswith("image/") else "")


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to checked addresses: resolves the host, refuses it when any
    address fails ``allow_address``, then connects to a checked address (the TLS handshake
    still uses the host name, so certificates are verified against it)."""

    def __init__(self, resolve: Resolver, allow_address: Callable[[str], bool]) -> None:
        self._resolve = resolve
        self._allow = allow_address
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        try:
            addrs = await self._resolve(host, port)
        except OSError as e:
            raise httpcore.ConnectError(f"cannot resolve the image host ({type(e).__name__})"
                                        ) from e
        if not addrs or not all(self._allow(a) for a in addrs):
            raise AddressRefusedError(host)
        return await self._inner.connect_tcp(addrs[0], port, timeout=timeout,
                                             local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not image sources")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class AddressRefusedError(Exception):
    """The image host resolved to an address that may not be fetched from (not an httpcore
    error, so httpx passes it through unchanged instead of making it a ConnectError)."""


class _CheckedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, backend: CheckedBackend) -> None:
        super().__init__(trust_env=False)
        # httpx has no public hook for the network backend: its pool is rebuilt around ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(), max_connections=8,
            network_backend=backend)


class ImageFetcher:
    """Fetches remote image URLs under :class:`RemoteImagesConfig`.

    Args:
        cfg: ``http.remote_images``.
        limits: Input limits (``max_image_bytes``).
        resolve: Host resolver (default: the system's).
        allow_address: Which resolved addresses may be connected to (default: public only).
    """

    def __init__(self, cfg: RemoteImagesConfig, limits: LimitsConfig, *,
                 resolve: Resolver = system_resolve,
                 allow_address: Callable[[str], bool] = is_public_address) -> None:
        self.cfg = cfg
        self.max_bytes = min(cfg.max_bytes, limits.max_image_bytes)
        self._backend = CheckedBackend(resolve, allow_address)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=_CheckedTransport(self._backend),
                                             follow_redirects=False, trust_env=False)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def check_url(self, url: str) -> None:
        """Scheme, credentials and host allowlist of one URL (before any network use).

        Raises:
            InvalidArgumentError: IMAGE_URL_NOT_ALLOWED.
        """
        if not self.cfg.enabled:
            raise _not_allowed("image_url: remote image URLs are not accepted here (send the "
                               "image as a data: URL)")
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            _ = parts.port  # raises on a malformed port
        except ValueError as e:
            raise _not_allowed("image_url: not a valid URL") from e
        schemes = ("https", "http") if self.cfg.allow_http else ("https",)
        if parts.scheme.lower() not in schemes:
            raise _not_allowed(f"image_url: only {' or '.join(schemes)} URLs are fetched")
        if parts.username is not None or parts.password is not None:
            raise _not_allowed("image_url: URLs with credentials are not fetched")
        if not host or not host_allowed(host, self.cfg.allow_hosts):
            raise _not_allowed("image_url: the image host is not in the allowed hosts")

    async def fetch(self, url: str, *, deadline_unix: float | None = None) -> ImageInput:
        """The image at ``url`` (following checked redirects).

        Raises:
            InvalidArgumentError: IMAGE_URL_NOT_ALLOWED, IMAGE_FETCH_FAILED, IMAGE_TOO_LARGE.
        """
        self.check_url(url)
        budget = self.cfg.timeout_s
        if deadline_unix is not None:
            budget = min(budget, deadline_unix - time.time())
        if budget <= 0:
            raise _fetch_failed("image_url: no time left to fetch the image")
        try:
            async with asyncio.timeout(budget):
                return await self._fetch(url, budget)
        except TimeoutError as e:
            raise _fetch_failed("image_url: the image was not fetched in time") from e

    async def _fetch(self, url: str, budget: float) -> ImageInput:
        client = self._http()
        for _ in range(self.cfg.max_redirects + 1):
            try:
                req = client.build_request("GET", url, timeout=budget,
                                           headers={"accept": "image/*"})
                resp = await client.send(req, stream=True)
            except AddressRefusedError as e:
                raise _not_allowed("image_url: the image host resolves to an address that is "
                                   "not fetched from (private, loopback, link-local or "
                                   "reserved)") from e
            except httpx.HTTPError as e:
                raise _fetch_failed(f"image_url: the image could not be fetched "
                                    f"({type(e).__name__})") from e
            try:
                if resp.status_code in (301, 302, 303, 307, 308):
                    location = resp.headers.get("location", "")
                    if not location:
                        raise _fetch_failed("image_url: a redirect without a location")
                    url = urljoin(url, location)
                    self.check_url(url)
                    continue
                if resp.status_code != 200:
                    raise _fetch_failed(f"image_url: the image host answered HTTP "
                                        f"{resp.status_code}")
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise InvalidArgumentError(
                        f"image_url: the image is larger than {self.max_bytes} bytes",
                        reason=Reason.IMAGE_TOO_LARGE)
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise InvalidArgumentError(
                            f"image_url: the image is larger than {self.max_bytes} bytes",
                            reason=Reason.IMAGE_TOO_LARGE)
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                return ImageInput(bytes(data), ctype if ctype.startswith("image/") else "")
            except httpx.HTTPError as e:
                raise _fetch_failed(f"image_url: the image could not be fetched "
                                    f"({type(e).__name__})") from e
            finally:
                await resp.aclose()
        raise _fetch_failed("image_url: too many redirects")
