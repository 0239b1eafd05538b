"""Safe image loading: every image the app touches (catalog or upload) goes through here.

Pillow decodes lazily, so size checks happen on the header before any pixel is decoded; that is
what stops a decompression bomb (a tiny file that claims 30000x30000 pixels).
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from recsys_core.errors import InvalidInputError

ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")


def load_image(
    source: str | Path | bytes,
    *,
    max_bytes: int = 10 * 1024 * 1024,
    max_pixels: int = 40_000_000,
    name: str | None = None,
) -> Image.Image:
    """Open, check and normalise an image to 8-bit RGB.

    Handles EXIF rotation, palette/alpha/CMYK/16-bit modes and animated files (first frame).
    Raises :class:`InvalidInputError` with a message naming the problem and the limit.
    """
    label = name or (Path(source).name if isinstance(source, (str, Path)) else "upload")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"image {label!r} not found")
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidInputError(f"image {label!r} is {size:,} bytes; the limit is {max_bytes:,} bytes")
        data = path.read_bytes()
    else:
        data = source
        if len(data) > max_bytes:
            raise InvalidInputError(f"image {label!r} is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    if not data:
        raise InvalidInputError(f"image {label!r} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice it; we check
            # the size ourselves below, so silence its own bomb heuristics.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise InvalidInputError(
                    f"image {label!r} is {image.format or 'an unknown format'}; "
                    f"allowed formats: {', '.join(ALLOWED_FORMATS)}"
                )
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInputError(
                    f"image {label!r} is {width}x{height} = {width * height:,} pixels; "
                    f"the limit is {max_pixels:,} pixels"
                )
            if width < 1 or height < 1:
                raise InvalidInputError(f"image {label!r} has no pixels ({width}x{height})")
            image.seek(0)  # animated GIF/WebP: the first frame stands for the item
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except InvalidInputError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fired inside open(), before we could read the size; its message
        # carries the pixel count ("Image size (N pixels) exceeds limit ...").
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise InvalidInputError(f"image {label!r} is {size}; the limit is {max_pixels:,} pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(
            f"image {label!r} could not be read as an image ({type(exc).__name__}); "
            f"allowed formats: {', '.join(ALLOWED_FORMATS)}"
        ) from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparent areas become white (icons are drawn for light backgrounds)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: rescale to 0..255 instead of clipping (clipping turns most images white).
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.astype("uint8"), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
