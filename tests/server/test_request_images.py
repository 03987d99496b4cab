"""Image input checks: formats, limits, decompression bombs, where images may come from."""

import base64
import io

import pytest
from PIL import Image

from server.errors import APIError
from server.request_images import check_image, decode_data_url, load_image, read_local_file
from server.settings import ImageSettings


def png(width: int = 8, height: int = 8, color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


SETTINGS = ImageSettings(max_bytes=64 << 10, max_pixels=256 * 256)


async def test_a_data_url_round_trips():
    assert await load_image(data_url(png()), SETTINGS, "p") == png()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("data:text/plain;base64,aGk=", "data:image/"),
        ("data:image/png,rawbytes", "data:image/"),
        ("data:image/png;base64,!!!notbase64", "not valid base64"),
        (data_url(b"definitely not an image"), "not a valid image"),
        (data_url(png()[:40]), "not a valid image"),  # truncated
        (data_url(png(300, 300)), "pixels"),  # over max_pixels, refused from the header
        ("https://example.com/cat.png", "Remote image URLs are not enabled"),
        ("/etc/passwd", "Local image paths are not enabled"),
        ("ftp://host/x.png", "Unsupported image URL scheme"),
    ],
)
async def test_bad_images_are_400_with_a_reason(url, fragment):
    with pytest.raises(APIError) as error:
        await load_image(url, SETTINGS, "messages.0.content.1")
    assert error.value.status == 400
    assert error.value.param == "messages.0.content.1"
    assert fragment in error.value.message


def test_decompression_bomb_is_refused_before_decoding():
    # A 20000x20000 PNG compresses to a few hundred KB; its header alone gives it away.
    bomb = png(20000, 20000, (0, 0, 0))
    with pytest.raises(APIError, match="pixels"):
        check_image(bomb, ImageSettings(max_bytes=8 << 20), "p")


def test_oversized_payload_is_refused_before_decoding_base64():
    with pytest.raises(APIError, match="larger than"):
        decode_data_url("data:image/png;base64," + "A" * (100 << 10), SETTINGS, "p")


def test_local_files_only_below_the_configured_root(tmp_path):
    (tmp_path / "ok.png").write_bytes(png())
    settings = ImageSettings(local_files_root=str(tmp_path))
    assert read_local_file("ok.png", settings, "p") == png()
    assert read_local_file(f"file://{tmp_path}/ok.png", settings, "p") == png()
    with pytest.raises(APIError, match="outside"):
        read_local_file("../../etc/passwd", settings, "p")
    with pytest.raises(APIError, match="cannot be read"):
        read_local_file("missing.png", settings, "p")
