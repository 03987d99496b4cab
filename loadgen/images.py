"""Images for the vision scenario, as data: URLs: generated (seeded) or read once from a folder."""

from __future__ import annotations

import base64
import functools
import io
import mimetypes
import random
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
GENERATED_POOL = 16  # distinct images cycled through, so no server can cache one answer


class ImageOptionError(ValueError):
    pass


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ImageOptionError(f"--image-size {text!r}: expected WIDTHxHEIGHT, e.g. 64x64") from None
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise ImageOptionError(f"--image-size {text!r}: each side must be 1..8192 pixels")
    return width, height


def folder_images(folder: str) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise ImageOptionError(f"--image-dir {folder}: no such folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageOptionError(f"--image-dir {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _generated(size: tuple[int, int], seed: int, index: int) -> str:
    from PIL import Image

    rng = random.Random(f"{seed}-{index}")
    # Blocks of random colours: real pixels to encode, cheap to make, different per index.
    small = Image.new("RGB", (8, 8))
    small.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(64)])
    buffer = io.BytesIO()
    small.resize(size, Image.Resampling.NEAREST).save(buffer, format="PNG")
    return _data_url(buffer.getvalue(), "image/png")


@functools.lru_cache(maxsize=4)
def image_pool(size: str, folder: str | None, seed: int) -> tuple[str, ...]:
    """The data URLs a run cycles through; built once per process (encoding is not free)."""
    if folder:
        return tuple(
            _data_url(p.read_bytes(), mimetypes.guess_type(p.name)[0] or "image/png")
            for p in folder_images(folder)
        )
    dims = parse_size(size)
    return tuple(_generated(dims, seed, i) for i in range(GENERATED_POOL))
