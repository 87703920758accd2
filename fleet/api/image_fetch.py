"""Fetching an image that a request names by http(s) URL, without letting the request reach
what only the server can reach (server-side request forgery).

The API sits inside the operator's network: a URL chosen by a client must not make it read the
cloud's metadata service (169.254.169.254), the cluster's own ports, or anything else that is
not on the public internet. So each fetch, and each of its redirects:

- takes http and https only, and no user name or password in the URL;
- resolves the host name itself and checks every address it resolves to: each must be public
  (`is_public`) or inside a network the operator named (--image-url-networks); a name with one
  private address among public ones is refused whole, since which one a connection would use
  is the resolver's choice;
- connects to the address it checked, never to the name again, so that a DNS server that
  answers differently the second time (DNS rebinding) gains nothing. The request still carries
  the name in its Host header, and https still checks the certificate against the name (it is
  the TLS server name, `sni_hostname`);
- reads at most the byte cap (the body is counted as it arrives; Content-Length is only used
  to refuse early) within one time limit for the whole fetch, redirects included;
- follows at most MAX_REDIRECTS redirects, and never goes through a proxy (HTTP_PROXY and its
  kin are ignored: a proxy would connect by name, after the check).

Errors (fleet.errors.BadRequest, 400), each message starting with the request's place:
`image_url_not_allowed` (URLs are off, a scheme other than http(s), credentials, an address
that is not allowed) and `image_fetch_failed` (no answer in time, a name that does not
resolve, an HTTP error, too many redirects), `image_too_large` (a body past the cap)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import httpx

from fleet import __version__
from fleet.api.image_policy import ImageUrlPolicy
from fleet.errors import BadRequest

IPAddress = IPv4Address | IPv6Address
MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
# IPv6 prefixes that carry an IPv4 address in their last 32 bits, which a NAT64 gateway
# connects to: the address that counts is that IPv4 one.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _not_allowed(where: str, why: str) -> BadRequest:
    return BadRequest(f"{where}: {why}", code="image_url_not_allowed")


def _failed(where: str, why: str) -> BadRequest:
    return BadRequest(f"{where}: the image could not be fetched: {why}", code="image_fetch_failed")


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped ::ffff:a.b.c.d, NAT64, 6to4, Teredo's
    client): a packet to the IPv6 form may end up there."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in prefix for prefix in _NAT64):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return address.teredo[1] if address.teredo is not None else None


def _plainly_public(address: IPAddress) -> bool:
    # is_global alone has changed between Python versions (multicast, IPv4-mapped forms), so
    # each kind of address that is not the public internet is named too.
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local
        or address.is_multicast or address.is_reserved or address.is_unspecified
        or (isinstance(address, IPv6Address) and address.is_site_local))


def _writes_ipv4(address: IPv6Address) -> bool:
    """Whether an IPv6 address is only a way of writing an IPv4 one (mapped, NAT64)."""
    return address.ipv4_mapped is not None or any(address in prefix for prefix in _NAT64)


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet, and so is any IPv4 address it stands for."""
    if isinstance(address, IPv4Address):
        return _plainly_public(address)
    embedded = _embedded_ipv4(address)
    if embedded is not None and not _plainly_public(embedded):
        return False
    # 6to4 and Teredo addresses are IPv6 addresses in their own right, which must be public too.
    return (embedded is not None and _writes_ipv4(address)) or _plainly_public(address)


def _kind(address: IPAddress) -> str:
    """What an address that is not public is, for the refusal's message."""
    embedded = _embedded_ipv4(address) if isinstance(address, IPv6Address) else None
    if embedded is not None and not _plainly_public(embedded):
        return f"an IPv6 form of {embedded}, which is not public"
    for name in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(address, f"is_{name}"):
            return f"a {name.replace('_', '-')} address"
    return "not a public address"


def address_allowed(address: IPAddress,
                    networks: Sequence[IPv4Network | IPv6Network] = ()) -> bool:
    """Whether a fetch may connect to `address`: a public one, or one in the operator's
    networks (an IPv4-mapped IPv6 address counts as its IPv4 one there)."""
    plain = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    if any(address in network or (plain is not None and plain in network)
           for network in networks):
        return True
    return is_public(address)


async def _resolve(host: str, port: int, where: str) -> list[IPAddress]:
    """Every address `host` stands for: itself when it is an address, else what the resolver
    answers (the event loop asks it in a thread). A name such as 2130706433 or 0x7f.1 reaches
    the resolver, which reads it the way the C library reads addresses (127.0.0.1 here), and is
    judged by that address like any other."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                         proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise _failed(where, f"cannot resolve {host!r} ({exc})") from None
    found: list[IPAddress] = []
    for *_, sockaddr in answers:
        # An IPv6 link-local answer may carry a zone ("fe80::1%eth0"); it is refused anyway.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise _failed(where, f"{host!r} has no address")
    return found


def _check_url(url: httpx.URL, where: str) -> None:
    if url.scheme not in ("http", "https"):
        raise _not_allowed(where, f"{url.scheme}: URLs are not fetched; an image is a data: "
                                  "URL or an http(s) URL")
    if url.userinfo:
        raise _not_allowed(where, "an image URL may not carry a user name or password")
    if not url.host:
        raise _not_allowed(where, "the image URL names no host")


def _host(url: httpx.URL) -> str:
    """The host as the resolver and TLS read it: an address, or a name in its ASCII (IDNA) form."""
    return url.raw_host.decode("ascii")


async def _allowed_addresses(url: httpx.URL, where: str, policy: ImageUrlPolicy) -> list[IPAddress]:
    _check_url(url, where)
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await _resolve(_host(url), port, where)
    for address in addresses:
        if not address_allowed(address, policy.networks):
            named = url.host if str(address) == url.host else f"{url.host} ({address})"
            raise _not_allowed(where, f"{named} is {_kind(address)}; image URLs reach public "
                                      "addresses only, unless the server names the network "
                                      "with --image-url-networks")
    return addresses


def _declared_length(response: httpx.Response) -> int | None:
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def _read_body(response: httpx.Response, where: str, max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise _failed(where, f"the server answered HTTP {response.status_code}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Decompressing is where a small answer turns into a big one: only plain bodies.
        raise _failed(where, f"the answer is {encoding}-encoded; images are fetched as sent")
    too_large = BadRequest(f"{where}: the image at the URL is larger than {max_bytes} bytes "
                           "(FLEET_IMAGE_MAX_BYTES)", code="image_too_large")
    declared = _declared_length(response)
    if declared is not None and declared > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > max_bytes:  # stop reading here: the rest never enters memory
            raise too_large
    return bytes(body)


def _redirect_target(url: httpx.URL, location: str, where: str) -> httpx.URL:
    try:
        return url.join(location)
    except httpx.InvalidURL:
        raise _failed(where, f"a redirect to {location[:200]!r}, which is not a URL") from None


async def _get_once(client: httpx.AsyncClient, url: httpx.URL, addresses: list[IPAddress],
                    where: str, max_bytes: int) -> bytes | httpx.URL:
    """One request, to the first of the checked addresses that accepts a connection: the
    body, or where a redirect points (joined to `url`, which still names the host)."""
    headers = {"Host": url.netloc.decode("ascii"), "Accept": "image/*",
               "Accept-Encoding": "identity", "User-Agent": f"fleet/{__version__}"}
    error: Exception | None = None
    for address in addresses:
        try:
            async with client.stream("GET", url.copy_with(host=str(address)), headers=headers,
                                     extensions={"sni_hostname": _host(url)}) as response:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    return _redirect_target(url, response.headers["location"], where)
                return await _read_body(response, where, max_bytes)
        except httpx.ConnectError as exc:  # the next address may answer (an IPv6 one may not)
            error = exc
        except httpx.HTTPError as exc:
            raise _failed(where, f"{type(exc).__name__}: {exc}") from None
    raise _failed(where, f"cannot connect to {url.host}: {error}")


async def _fetch(url: httpx.URL, where: str, policy: ImageUrlPolicy) -> bytes:
    verify = policy.verify if policy.verify is not None else httpx.create_ssl_context()
    # No timeout of httpx's own: the caller's one deadline covers the whole fetch.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=verify,
                                 timeout=None) as client:
        for hop in range(MAX_REDIRECTS + 1):
            place = where if hop == 0 else f"{where} (redirected to {str(url)[:200]})"
            addresses = await _allowed_addresses(url, place, policy)
            answer = await _get_once(client, url, addresses, place, policy.limits.max_bytes)
            if isinstance(answer, bytes):
                return answer
            url = answer
        raise _failed(where, f"more than {MAX_REDIRECTS} redirects")


async def fetch_image_bytes(url: str, where: str, policy: ImageUrlPolicy) -> bytes:
    """The body at an http(s) URL under the policy's rules (see the module's text); the caller
    checks that it is an image."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise BadRequest(f"{where}: not a valid URL: {exc}", code="invalid_image") from None
    _check_url(parsed, where)
    if not policy.allowed:
        raise _not_allowed(where, "this server does not fetch image URLs; send the image inline "
                                  "as a data: URL (data:image/png;base64,...), or start the "
                                  "server with --allow-image-urls (FLEET_ALLOW_IMAGE_URLS=1)")
    try:
        return await asyncio.wait_for(_fetch(parsed, where, policy), policy.timeout_s)
    except asyncio.TimeoutError:
        raise _failed(where, f"no whole answer within {policy.timeout_s:g} s "
                             "(FLEET_IMAGE_FETCH_TIMEOUT_S)") from None
