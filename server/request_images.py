"""Image inputs from OpenAI `image_url` parts, checked before they reach a model worker.

Accepted: `data:` base64 URLs; local files only below `images.local_files_root`; http(s) URLs only when
`images.allow_remote_urls` is on. Every image is size-checked from its header before it is decoded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiohttp
from PIL import Image, UnidentifiedImageError

from server.errors import APIError
from server.settings import ImageSettings

log = logging.getLogger(__name__)


def _bad_image(message: str, param: str) -> APIError:
    return APIError(400, message, code="invalid_image", param=param)


def decode_data_url(url: str, settings: ImageSettings, param: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise _bad_image("Image data URLs must look like data:image/<type>;base64,<data>.", param)
    if len(payload) > settings.max_bytes * 4 // 3 + 4:
        raise _bad_image(
            f"The image is larger than this server's limit of {settings.max_bytes} bytes.", param
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_image("The image data is not valid base64.", param) from None


def read_local_file(url: str, settings: ImageSettings, param: str) -> bytes:
    if not settings.local_files_root:
        raise _bad_image("Local image paths are not enabled on this server (images.local_files_root).", param)
    raw = unquote(urlparse(url).path) if url.startswith("file://") else url
    root = Path(settings.local_files_root).resolve()
    path = (root / raw).resolve() if not Path(raw).is_absolute() else Path(raw).resolve()
    if not path.is_relative_to(root):
        raise _bad_image("The image path is outside the folder this server may read.", param)
    try:
        if path.stat().st_size > settings.max_bytes:
            raise _bad_image(
                f"The image is larger than this server's limit of {settings.max_bytes} bytes.", param
            )
        return path.read_bytes()
    except OSError:
        raise _bad_image("The image file cannot be read.", param) from None


async def fetch_remote(url: str, settings: ImageSettings, param: str) -> bytes:
    if not settings.allow_remote_urls:
        raise _bad_image(
            "Remote image URLs are not enabled on this server; send the image as a data: URL.", param
        )
    timeout = aiohttp.ClientTimeout(total=settings.remote_timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise _bad_image(f"Fetching the image returned HTTP {response.status}.", param)
            data = await response.content.read(settings.max_bytes + 1)
    except (aiohttp.ClientError, TimeoutError):
        raise _bad_image("The image URL could not be fetched.", param) from None
    if len(data) > settings.max_bytes:
        raise _bad_image(
            f"The image is larger than this server's limit of {settings.max_bytes} bytes.", param
        )
    return data


def check_image(data: bytes, settings: ImageSettings, param: str) -> tuple[int, int]:
    """(width, height) of a complete, decodable image within the limits; else a 400."""
    if len(data) > settings.max_bytes:
        raise _bad_image(
            f"The image is larger than this server's limit of {settings.max_bytes} bytes.", param
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > settings.max_pixels:
                raise _bad_image(
                    f"The image is {width}x{height} pixels, more than this server's limit of "
                    f"{settings.max_pixels} pixels.",
                    param,
                )
            image.load()  # a truncated or corrupt image fails here, not in the model worker
    except APIError:
        raise
    except Image.DecompressionBombError:  # PIL's own guard, at twice its default pixel limit
        raise _bad_image(
            f"The image has more than this server's limit of {settings.max_pixels} pixels.", param
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise _bad_image("The data is not a valid image.", param) from None
    return width, height


async def load_image(url: str, settings: ImageSettings, param: str) -> bytes:
    """The encoded bytes of one image_url, validated; decoding runs off the event loop."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        data = decode_data_url(url, settings, param)
    elif scheme in ("http", "https"):
        data = await fetch_remote(url, settings, param)
    elif scheme in ("file", ""):
        data = read_local_file(url, settings, param)
    else:
        raise _bad_image(f"Unsupported image URL scheme '{scheme}'.", param)
    await asyncio.get_running_loop().run_in_executor(None, check_image, data, settings, param)
    return data
