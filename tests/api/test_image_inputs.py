"""Images in requests (fleet.api.image_inputs, fleet.api.image_fetch): inline images made here
with Pillow, and image URLs fetched from real HTTP(S) servers on 127.0.0.1.

Every fetch in this file may reach loopback addresses only: a tripwire (autouse) fails any
test whose fetch would connect elsewhere, so that a broken address check shows as a failure
here and never as a packet sent to 10.1.2.3 or 169.254.169.254."""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import ipaddress
import socket
import ssl
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from fleet.api.image_fetch import address_allowed, is_public
from fleet.api.image_inputs import (
    ImageLimits,
    ImageUrlPolicy,
    image_from_base64,
    image_from_bytes,
    image_from_data_url,
    resolve_image,
)
from fleet.errors import BadRequest
from fleet.server_config import ServerConfig

WHERE = "messages[0].content[1].image_url.url"
LOCAL_V4 = (ipaddress.ip_network("127.0.0.1/32"),)
LOCAL_BOTH = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))
SMALL = ImageLimits(max_bytes=200_000, max_pixels=1_000_000)


# ---- images made here

def _encoded(fmt: str, width: int, height: int, mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), (200, 30, 90) if mode == "RGB" else 7)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _noise_png(width: int, height: int) -> bytes:
    image = Image.frombytes("RGB", (width, height), bytes((i * 7919) % 251 for i in
                                                          range(width * height * 3)))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _claimed_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims width x height RGB pixels: its data is a
    handful of rows at most, so decoding it would fail, not fill memory."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _refusal(code: str, call: Any, *args: Any) -> str:
    """The message of the BadRequest that `call(*args)` raises, after checking its code and
    that it names the place in the request first."""
    with pytest.raises(BadRequest) as caught:
        result = call(*args)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert caught.value.code == code, caught.value.message
    assert caught.value.message.startswith(WHERE + ":") or \
        caught.value.message.startswith(WHERE + " (redirected"), caught.value.message
    return caught.value.message


def _resolve(reference: str, policy: ImageUrlPolicy) -> Any:
    return asyncio.run(resolve_image(reference, WHERE, policy))


# ---- inline images

@pytest.mark.parametrize(("fmt", "media_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                                 ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_a_data_url_image_gives_its_bytes_type_and_size(fmt, media_type):
    data = _encoded(fmt, 7, 5)
    image = image_from_data_url(_data_url(data, media_type), WHERE, SMALL)
    assert (image.data, image.media_type, image.width, image.height) == (data, media_type, 7, 5)


def test_anthropic_base64_and_the_async_path_read_the_same_image():
    data = _encoded("JPEG", 9, 4)
    from_base64 = image_from_base64(base64.b64encode(data).decode(), "image/jpeg", WHERE, SMALL)
    resolved = _resolve(_data_url(data, "image/jpeg"), ImageUrlPolicy(limits=SMALL))
    assert from_base64 == resolved
    assert (resolved.width, resolved.height, resolved.media_type) == (9, 4, "image/jpeg")


def test_the_real_format_wins_over_the_declared_one():
    jpeg = _encoded("JPEG", 6, 3)
    image = image_from_data_url(_data_url(jpeg, "image/png"), WHERE, SMALL)
    assert image.media_type == "image/jpeg" and (image.width, image.height) == (6, 3)
    assert image_from_data_url(_data_url(jpeg, "image/jpg"), WHERE, SMALL).media_type == "image/jpeg"
    assert image_from_data_url(f"data:;base64,{base64.b64encode(jpeg).decode()}", WHERE,
                               SMALL).media_type == "image/jpeg"


@pytest.mark.parametrize("payload", ["iVBORw0KGgo@@@=", "iVBO Rw0K", "iVBORw0KGgo\n", "abc",
                                     "ÿÿÿÿ"])
def test_base64_is_decoded_strictly(payload):
    message = _refusal("invalid_image", image_from_data_url, f"data:image/png;base64,{payload}",
                       WHERE, SMALL)
    assert "base64" in message


def test_bytes_that_are_no_image_are_refused():
    for data in (b"hello, this is text", b"BM" + b"\x00" * 60, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
                 _encoded("PNG", 30, 30)[:60]):
        _refusal("invalid_image", image_from_data_url, _data_url(data), WHERE, SMALL)
    _refusal("invalid_image", image_from_base64, "", "image/png", WHERE, SMALL)


@pytest.mark.parametrize("media_type", ["image/svg+xml", "text/plain", "application/octet-stream",
                                        "image/bmp", "text/html"])
def test_media_types_other_than_the_four_formats_are_refused(media_type):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    _refusal("invalid_image", image_from_data_url, _data_url(svg, media_type), WHERE, SMALL)
    # Even with the bytes of a real PNG: the client called it something else.
    _refusal("invalid_image", image_from_base64,
             base64.b64encode(_encoded("PNG", 2, 2)).decode(), media_type, WHERE, SMALL)


def test_a_data_url_that_is_not_base64_or_not_a_data_url_is_refused():
    _refusal("invalid_image", image_from_data_url, "data:image/png,%89PNG%0D%0A", WHERE, SMALL)
    _refusal("invalid_image", image_from_data_url, "data:image/png;base64", WHERE, SMALL)
    _refusal("invalid_image", image_from_data_url, "image/png;base64,AAAA", WHERE, SMALL)
    _refusal("invalid_image", _resolve, base64.b64encode(_encoded("PNG", 2, 2)).decode(),
             ImageUrlPolicy(limits=SMALL))


def test_more_bytes_than_the_cap_are_refused():
    large = _noise_png(300, 300)
    assert len(large) > SMALL.max_bytes
    message = _refusal("image_too_large", image_from_data_url, _data_url(large), WHERE, SMALL)
    assert "FLEET_IMAGE_MAX_BYTES" in message
    # Refused by the text's length, before any of it is decoded (this is not even base64).
    _refusal("image_too_large", image_from_base64, "!" * 300_000, "image/png", WHERE, SMALL)


def test_a_decompression_bomb_is_refused_from_its_header():
    # Pillow's own bomb check answers for 10^10 pixels; ours for what is under Pillow's cap
    # but over ours. Either way before decoding: the file holds no such pixels, and decoding
    # it would have failed as an invalid image instead.
    huge = _claimed_png(100_000, 100_000)
    assert len(huge) < 200
    _refusal("image_too_large", image_from_data_url, _data_url(huge), WHERE, SMALL)
    over_ours = _claimed_png(5_000, 5_000)  # 25 megapixels, under Pillow's 89
    message = _refusal("image_too_large", image_from_bytes, over_ours, None, WHERE,
                       ImageLimits(max_pixels=20_000_000))
    assert "5000x5000" in message and "FLEET_IMAGE_MAX_PIXELS" in message
    # Under both caps, the same kind of file is read, and refused as the broken image it is.
    _refusal("invalid_image", image_from_bytes, _claimed_png(500, 500), None, WHERE, SMALL)


def test_the_caps_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLEET_IMAGE_MAX_BYTES", "1MiB")
    monkeypatch.setenv("FLEET_IMAGE_MAX_PIXELS", "4096")
    monkeypatch.setenv("FLEET_IMAGE_FETCH_TIMEOUT_S", "2.5")
    policy = ImageUrlPolicy.from_config(ServerConfig())
    assert policy.limits == ImageLimits(max_bytes=2**20, max_pixels=4096)
    assert policy.timeout_s == 2.5 and not policy.allowed
    _refusal("image_too_large", image_from_data_url, _data_url(_encoded("PNG", 65, 65)), WHERE)


# ---- which addresses a URL may reach

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "239.255.255.250", "255.255.255.255",
    "240.0.0.1", "192.0.2.1", "198.18.0.1", "fe80::1", "fd00::1", "fc00::1", "ff02::1",
    "ff0e::1", "fec0::1", "2001:db8::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "64:ff9b::a00:1", "64:ff9b::7f00:1", "2002:7f00:1::1",
    "2002:a00:1::1", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "::127.0.0.1"])
def test_addresses_that_are_not_public_are_refused(address):
    assert not is_public(ipaddress.ip_address(address))
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_and_their_ipv6_forms_are_allowed(address):
    assert address_allowed(ipaddress.ip_address(address))


def test_the_operators_networks_are_allowed_and_nothing_beside_them():
    networks = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd12::/16"))
    assert address_allowed(ipaddress.ip_address("10.20.30.40"), networks)
    assert address_allowed(ipaddress.ip_address("::ffff:10.20.30.40"), networks)
    assert address_allowed(ipaddress.ip_address("fd12::5"), networks)
    for other in ("192.168.0.1", "127.0.0.1", "fd13::5", "169.254.169.254", "::ffff:10.0.0.1"):
        assert address_allowed(ipaddress.ip_address(other), networks[1:]) is False
    assert address_allowed(ipaddress.ip_address("11.0.0.1"), networks)  # public anyway


# ---- URLs, from real servers on 127.0.0.1

@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    original = httpx.AsyncClient.stream

    def tripwire(self: httpx.AsyncClient, method: str, url: Any, **kwargs: Any) -> Any:
        host = httpx.URL(url).host
        assert ipaddress.ip_address(host).is_loopback, f"the fetch tried to reach {host}"
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "stream", tripwire)


PNG = _encoded("PNG", 12, 8)


class _Images(http.server.BaseHTTPRequestHandler):
    """/cat.png, /hops/N (N redirects, then the image), /redirect?to=URL, /text, /missing,
    /gzip, /big (more than any cap, without Content-Length), /claims-big (Content-Length)."""

    protocol_version = "HTTP/1.0"
    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        url = urlparse(self.path)
        record: dict[str, Any] = {"path": url.path, "host": self.headers.get("Host")}
        self.seen.append(record)
        if url.path == "/cat.png":
            self._send(200, PNG, Content_Type="image/png", Content_Length=str(len(PNG)))
        elif url.path.startswith("/hops/"):
            left = int(url.path.rsplit("/", 1)[1])
            target = f"/hops/{left - 1}" if left > 1 else "/cat.png"
            self._send(302, Location=target)
        elif url.path == "/redirect":
            self._send(307, Location=parse_qs(url.query)["to"][0])
        elif url.path == "/text":
            self._send(200, b"<html>no image here</html>", Content_Type="image/png")
        elif url.path == "/gzip":
            self._send(200, zlib.compress(PNG), Content_Type="image/png", Content_Encoding="gzip")
        elif url.path == "/claims-big":
            self._send(200, PNG, Content_Length=str(10**9))
        elif url.path == "/big":
            self._send_forever(record)
        else:
            self._send(404, b"not found")

    def _send_forever(self, record: dict[str, Any]) -> None:
        self.send_response(200)
        self.end_headers()
        chunk = PNG + b"\x00" * (65536 - len(PNG))
        try:
            for _ in range(1024):  # 64 MiB, far more than the client reads
                self.wfile.write(chunk)
            record["sent_all"] = True
        except OSError:
            record["sent_all"] = False


def _serve(server: http.server.ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    yield from _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images))


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that takes connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def _allowed(networks: tuple[Any, ...] = LOCAL_V4, **fields: Any) -> ImageUrlPolicy:
    return ImageUrlPolicy(allowed=True, networks=networks, limits=SMALL, **fields)


def test_a_url_is_refused_unless_the_operator_allows_urls(site):
    message = _refusal("image_url_not_allowed", _resolve, f"http://{site}/cat.png",
                       ImageUrlPolicy(networks=LOCAL_V4))
    assert "--allow-image-urls" in message and "data:image/png;base64" in message


def test_an_image_from_an_allowed_network_is_fetched_with_its_name_in_host(site):
    image = _resolve(f"http://{site}/cat.png", _allowed())
    assert (image.data, image.media_type, image.width, image.height) == (PNG, "image/png", 12, 8)
    port = site.rsplit(":", 1)[1]
    _Images.seen.clear()
    # localhost is ::1 and 127.0.0.1; the server listens on the latter only.
    assert _resolve(f"http://localhost:{port}/cat.png", _allowed(LOCAL_BOTH)).data == PNG
    assert _Images.seen[-1]["host"] == f"localhost:{port}"


@pytest.mark.parametrize("url", [
    "http://{site}/cat.png", "http://localhost:{port}/cat.png", "http://[::1]:{port}/cat.png",
    "http://[::ffff:127.0.0.1]:{port}/cat.png", "http://2130706433:{port}/cat.png",
    "http://0x7f.1:{port}/cat.png", "http://127.1:{port}/cat.png", "http://0.0.0.0:{port}/",
    "http://10.1.2.3/cat.png", "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/cat.png", "http://192.168.1.1/", "http://[fe80::1]/", "http://[fd00::1]/",
    "http://224.0.0.1/", "https://[::ffff:a9fe:a9fe]/"])
def test_addresses_off_the_public_internet_are_refused(site, url):
    port = site.rsplit(":", 1)[1]
    message = _refusal("image_url_not_allowed", _resolve, url.format(site=site, port=port),
                       _allowed(networks=()))
    assert "--image-url-networks" in message


def test_localhost_is_refused_while_one_of_its_addresses_is_not_allowed(site):
    port = site.rsplit(":", 1)[1]
    message = _refusal("image_url_not_allowed", _resolve, f"http://localhost:{port}/cat.png",
                       _allowed(networks=(ipaddress.ip_network("::1/128"),)))
    assert "localhost (127.0.0.1)" in message


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/",
                                    "http://10.1.2.3/cat.png", "http://[::1]:{port}/cat.png",
                                    "file:///etc/passwd", "http://user:secret@{site}/cat.png"])
def test_a_redirect_is_checked_like_the_first_url(site, target):
    port = site.rsplit(":", 1)[1]
    url = f"http://{site}/redirect?to={target.format(site=site, port=port)}"
    message = _refusal("image_url_not_allowed", _resolve, url, _allowed())
    assert "redirected to" in message


def test_at_most_three_redirects_are_followed(site):
    assert _resolve(f"http://{site}/hops/3", _allowed()).data == PNG
    message = _refusal("image_fetch_failed", _resolve, f"http://{site}/hops/4", _allowed())
    assert "more than 3 redirects" in message


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/cat.png",
                                 "gopher://127.0.0.1:70/", "http://user:pw@{site}/cat.png",
                                 "http:///cat.png"])
def test_other_schemes_and_credentials_are_refused_allowed_or_not(site, url):
    for policy in (_allowed(), ImageUrlPolicy()):
        _refusal("image_url_not_allowed", _resolve, url.format(site=site), policy)


def test_a_body_past_the_cap_is_cut_and_refused(site):
    _Images.seen.clear()
    message = _refusal("image_too_large", _resolve, f"http://{site}/big", _allowed())
    assert "FLEET_IMAGE_MAX_BYTES" in message
    _refusal("image_too_large", _resolve, f"http://{site}/claims-big", _allowed())
    # The client stopped reading and closed: the server could not send its 64 MiB.
    for _ in range(200):
        if "sent_all" in _Images.seen[0]:
            break
        threading.Event().wait(0.01)
    assert _Images.seen[0]["sent_all"] is False


def test_a_server_that_never_answers_is_given_up_after_the_timeout(silent_port):
    message = _refusal("image_fetch_failed", _resolve, f"http://127.0.0.1:{silent_port}/cat.png",
                       _allowed(timeout_s=0.3))
    assert "0.3 s" in message


@pytest.mark.parametrize(("path", "code", "words"), [
    ("/text", "invalid_image", "not a PNG, JPEG"), ("/missing", "image_fetch_failed", "HTTP 404"),
    ("/gzip", "image_fetch_failed", "gzip")])
def test_answers_that_are_no_image_are_refused(site, path, code, words):
    assert words in _refusal(code, _resolve, f"http://{site}{path}", _allowed())


# ---- https: the certificate is checked against the URL's name, not the address connected to

def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a certificate for the name `localhost` only (no IP address) signed by it."""
    folder = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem"),
             "-subj", "/CN=fleet test CA", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *ec, "-keyout", str(folder / "leaf.key"), "-out", str(folder / "leaf.csr"),
             "-subj", "/CN=localhost")
    (folder / "leaf.ext").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", str(folder / "leaf.csr"), "-CA", str(folder / "ca.pem"),
             "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(folder / "leaf.ext"), "-out", str(folder / "leaf.pem"))
    return folder


@pytest.fixture(scope="module")
def tls_site(tls_files: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files / "leaf.pem", tls_files / "leaf.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


def test_https_checks_the_certificate_against_the_name_in_the_url(tls_site, tls_files):
    trusted = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
    port = tls_site.rsplit(":", 1)[1]
    image = _resolve(f"https://localhost:{port}/cat.png", _allowed(LOCAL_BOTH, verify=trusted))
    assert image.data == PNG
    # The same server by its address: the certificate does not name 127.0.0.1.
    message = _refusal("image_fetch_failed", _resolve, f"https://127.0.0.1:{port}/cat.png",
                       _allowed(LOCAL_BOTH, verify=trusted))
    assert "certificate" in message.lower()
    # And without the test CA among the roots, the name alone is not enough.
    _refusal("image_fetch_failed", _resolve, f"https://localhost:{port}/cat.png",
             _allowed(LOCAL_BOTH))


# ---- the operator's flags

def _config_from_cli(monkeypatch: pytest.MonkeyPatch, command: str, *args: str,
                     env: dict[str, str] | None = None) -> ServerConfig:
    """The ServerConfig that `fleet COMMAND ARGS` would start the API with (nothing starts)."""
    import fleet.server
    from fleet.cli import server_cmds

    captured: list[ServerConfig] = []
    monkeypatch.setattr(fleet.server, "run_cluster", lambda config, with_worker: config)
    monkeypatch.setattr(server_cmds, "_run",
                        lambda component, level, factory: captured.append(factory()))
    result = CliRunner().invoke(getattr(server_cmds, command), list(args), env=env or {},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return captured[0]


@pytest.mark.parametrize("command", ["local", "supervisor"])
def test_the_flags_reach_the_apis_config(monkeypatch, command):
    from fleet.api.app import create_app
    from fleet.cli import server_cmds

    help_text = CliRunner().invoke(getattr(server_cmds, command), ["--help"]).output
    assert "--allow-image-urls" in help_text and "--image-url-networks" in help_text
    assert not _config_from_cli(monkeypatch, command).allow_image_urls
    config = _config_from_cli(monkeypatch, command, "--allow-image-urls",
                              "--image-url-networks", "10.0.0.0/8,fd12::/16")
    app = create_app(None, "127.0.0.1:1", config)
    while not hasattr(app, "routes"):  # the FastAPI application inside the middleware
        app = app._app
    policy = ImageUrlPolicy.from_config(app.state.config)
    assert policy.allowed
    assert policy.networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd12::/16"))
    from_env = _config_from_cli(monkeypatch, command, env={
        "FLEET_ALLOW_IMAGE_URLS": "1", "FLEET_IMAGE_URL_NETWORKS": "127.0.0.1/32 ::1/128"})
    assert from_env.allow_image_urls and from_env.image_url_networks == LOCAL_BOTH


@pytest.mark.parametrize(("args", "words"), [
    (["--image-url-networks", "10.0.0.0/8"], "needs --allow-image-urls"),
    (["--allow-image-urls", "--image-url-networks", "10.0.0.1/8"], "host bits set"),
    (["--allow-image-urls", "--image-url-networks", "intranet"], "not a network")])
def test_networks_without_urls_or_that_are_not_networks_are_usage_errors(args, words):
    from fleet.cli import server_cmds

    result = CliRunner().invoke(server_cmds.local, args)
    assert result.exit_code == 2 and words in result.output, result.output
