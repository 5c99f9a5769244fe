"""image_url handling: data URLs, and the rules of remote fetching (allowlist, no private or
loopback addresses after resolution, checked redirects, size and time limits) against a real
loopback HTTP server."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.helpers import png_bytes
from vlmguard.config import LimitsConfig, RemoteImagesConfig
from vlmguard.errors import InvalidArgumentError, Reason
from vlmguard.http.chat import parse_chat
from vlmguard.http.images import ImageFetcher, decode_data_url, host_allowed, is_public_address

PNG = png_bytes((16, 16))
LIMITS = LimitsConfig()


@pytest.mark.parametrize(("ip", "public"), [
    ("93.184.216.34", True), ("2606:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("240.0.0.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("not-an-ip", False),
])
def test_only_global_unicast_addresses_are_public(ip: str, public: bool) -> None:
    assert is_public_address(ip) is public


def test_host_allowlist_matches_exact_names_and_subdomains_only() -> None:
    allow = ["images.example.com", "*.cdn.example.org"]
    assert host_allowed("images.example.com", allow)
    assert host_allowed("IMAGES.example.com.", allow)
    assert host_allowed("a.b.cdn.example.org", allow)
    assert not host_allowed("cdn.example.org", allow)
    assert not host_allowed("evilcdn.example.org", allow)
    assert not host_allowed("images.example.com.evil.net", allow)
    assert not host_allowed("anything", [])


def test_data_urls_decode_with_limits() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    img = decode_data_url(url, LIMITS)
    assert img.data == PNG and img.mime_type == "image/png"
    for bad, reason in (("data:image/png;base64,@@@", Reason.MALFORMED_REQUEST),
                        ("data:image/png;base64", Reason.MALFORMED_REQUEST),
                        ("data:image/png;base64," + "A" * 4000, Reason.IMAGE_TOO_LARGE)):
        with pytest.raises(InvalidArgumentError) as ei:
            decode_data_url(bad, LimitsConfig(max_image_bytes=1000))
        assert ei.value.reason == reason


def _fetcher(**kw: Any) -> ImageFetcher:
    cfg = RemoteImagesConfig(**{"enabled": True, "allow_hosts": ["images.test", "evil.test"],
                                "allow_http": True, **kw})
    hosts = {"images.test": ["127.0.0.1"], "evil.test": ["127.0.0.2"]}

    async def resolve(host: str, port: int) -> list[str]:
        return hosts.get(host, ["127.0.0.1"])

    return ImageFetcher(cfg, LIMITS, resolve=resolve,
                        allow_address=lambda ip: ip == "127.0.0.1")


def _fetch(fetcher: ImageFetcher, url: str) -> Any:
    async def go() -> Any:
        try:
            return await fetcher.fetch(url, deadline_unix=time.time() + 10)
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def _reason(fetcher: ImageFetcher, url: str) -> str:
    with pytest.raises(InvalidArgumentError) as ei:
        _fetch(fetcher, url)
    return ei.value.reason


@pytest.mark.parametrize("url", ["https://images.test/a.png", "ftp://images.test/a.png",
                                 "http://images.test/a.png", "https://u:p@images.test/a.png",
                                 "https://other.test/a.png", "https://[::1/a.png"])
def test_urls_refused_before_any_network_use(url: str) -> None:
    default_off = ImageFetcher(RemoteImagesConfig(), LIMITS)
    assert _reason(default_off, url) == Reason.IMAGE_URL_NOT_ALLOWED
    https_only = _fetcher(allow_http=False)
    if url != "https://images.test/a.png":
        assert _reason(https_only, url) == Reason.IMAGE_URL_NOT_ALLOWED


def test_a_host_that_resolves_to_a_private_address_is_refused() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return {"a.test": ["10.0.0.7"], "b.test": ["93.184.216.34", "127.0.0.1"],
                "c.test": ["169.254.169.254"]}[host]

    for host in ("a.test", "b.test", "c.test"):
        fetcher = ImageFetcher(RemoteImagesConfig(enabled=True, allow_hosts=[host]), LIMITS,
                               resolve=resolve)
        assert _reason(fetcher, f"https://{host}/x.png") == Reason.IMAGE_URL_NOT_ALLOWED


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        address: Any = self.server.server_address
        port = int(address[1])
        routes = {
            "/img.png": (200, {"content-type": "image/png"}, PNG),
            "/to-private": (302, {"location": f"http://evil.test:{port}/img.png"}, b""),
            "/to-unlisted": (302, {"location": f"http://unlisted.test:{port}/img.png"}, b""),
            "/to-img": (301, {"location": "/img.png"}, b""),
            "/loop": (302, {"location": "/loop"}, b""),
            "/big": (200, {"content-type": "image/png"}, b"\0" * 300_000),
            "/missing": (404, {}, b""),
        }
        if self.path == "/slow":
            time.sleep(2)
        status, headers, body = routes.get(self.path, (200, {}, PNG))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_allowed_image_is_fetched_and_checked_redirects_followed(server: int) -> None:
    img = _fetch(_fetcher(), f"http://images.test:{server}/img.png")
    assert img.data == PNG and img.mime_type == "image/png"
    assert _fetch(_fetcher(), f"http://images.test:{server}/to-img").data == PNG


@pytest.mark.parametrize(("path", "reason", "kw"), [
    ("/to-private", Reason.IMAGE_URL_NOT_ALLOWED, {}),
    ("/to-unlisted", Reason.IMAGE_URL_NOT_ALLOWED, {}),
    ("/loop", Reason.IMAGE_FETCH_FAILED, {}),
    ("/big", Reason.IMAGE_TOO_LARGE, {"max_bytes": 100_000}),
    ("/missing", Reason.IMAGE_FETCH_FAILED, {}),
    ("/slow", Reason.IMAGE_FETCH_FAILED, {"timeout_s": 0.3}),
])
def test_remote_fetch_limits(server: int, path: str, reason: str, kw: dict[str, Any]) -> None:
    assert _reason(_fetcher(**kw), f"http://images.test:{server}{path}") == reason


def test_loopback_server_is_refused_with_the_default_address_rule(server: int) -> None:
    fetcher = ImageFetcher(RemoteImagesConfig(enabled=True, allow_hosts=["localhost"],
                                              allow_http=True), LIMITS)
    assert _reason(fetcher, f"http://localhost:{server}/img.png") == Reason.IMAGE_URL_NOT_ALLOWED
    assert _reason(fetcher, f"http://127.0.0.1:{server}/img.png") == Reason.IMAGE_URL_NOT_ALLOWED


def test_a_fetched_image_is_forwarded_as_the_bytes_that_were_checked() -> None:
    async def fetch(url: str) -> Any:
        return decode_data_url("data:image/png;base64," + base64.b64encode(PNG).decode(),
                               LIMITS)

    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://images.test/a.png",
                                            "detail": "low"}},
        {"type": "text", "text": "What is this?"}]}]}
    chat = asyncio.run(parse_chat(body, LIMITS, fetch))
    part = chat.forward_body()["messages"][0]["content"][0]
    assert part["image_url"]["detail"] == "low"
    assert part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert chat.images[0].data == PNG and chat.text == "What is this?"
    assert body["messages"][0]["content"][0]["image_url"]["url"] == "https://images.test/a.png"
