"""What the API accepts of the images that requests carry, as two small typed values made once
from the operator's settings and handed to fleet.api.image_inputs by its caller: the caps on
one image (ImageLimits) and whether, and from where, images named by URL may be fetched
(ImageUrlPolicy). Nothing here is global, so a test or a caller states its own."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from fleet import settings
from fleet.server_config import ServerConfig


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """The caps on one image: its encoded bytes (FLEET_IMAGE_MAX_BYTES) and its pixels
    (FLEET_IMAGE_MAX_PIXELS, read from the header, so a small file that claims a huge picture
    is refused before its pixels are decoded)."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 50_000_000

    @classmethod
    def from_settings(cls) -> ImageLimits:
        return cls(max_bytes=settings.image_max_bytes(), max_pixels=settings.image_max_pixels())


@dataclass(frozen=True, slots=True)
class ImageUrlPolicy:
    """Whether images named by http(s) URL are fetched, and under which rules.

    `allowed`: the operator's --allow-image-urls; without it only inline images are taken.
    `networks`: --image-url-networks, the non-public networks a URL may reach besides the
    public internet. `timeout_s`: the whole fetch, redirects included. `verify`: the
    certificates https answers are checked against; None: httpx's default (certifi's roots,
    or SSL_CERT_FILE / SSL_CERT_DIR where set)."""

    allowed: bool = False
    networks: tuple[IPv4Network | IPv6Network, ...] = ()
    limits: ImageLimits = field(default_factory=ImageLimits)
    timeout_s: float = 10.0
    verify: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: ServerConfig) -> ImageUrlPolicy:
        """The policy of the API that `config` starts, with the caps of the environment."""
        return cls(allowed=config.allow_image_urls, networks=config.image_url_networks,
                   limits=ImageLimits.from_settings(),
                   timeout_s=settings.image_fetch_timeout_s())
