"""``load_image``: mode normalisation and refusal of anything that is not a safe, readable image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.imaging import encoded, header_only_png
from recsys_core.errors import InvalidInputError
from recsys_core.data.images import load_image


# -- normalisation -----------------------------------------------------------------------------------


def test_rgba_png_gets_white_background(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 2), (0, 0, 0, 0))  # fully transparent
    img.putpixel((0, 0), (255, 0, 0, 255))  # opaque red
    img.putpixel((1, 0), (0, 0, 255, 128))  # half-transparent blue
    path = tmp_path / "icon.png"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (4, 2)
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((3, 1)) == (255, 255, 255)
    r, g, b = out.getpixel((1, 0))
    assert (r, g) == (127, 127) and b == 255


def test_palette_png_with_transparency() -> None:
    img = Image.new("P", (2, 1), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    img.putpixel((1, 0), 1)
    out = load_image(encoded(img, "PNG", transparency=1))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 0)) == (255, 255, 255)  # the transparent index becomes white


def test_16bit_greyscale_is_rescaled_not_clipped() -> None:
    img = Image.new("I;16", (3, 1))
    for x, value in enumerate((1000, 2000, 3000)):
        img.putpixel((x, 0), value)
    out = load_image(encoded(img, "PNG"))
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (127, 127, 127), (255, 255, 255)]


def test_flat_16bit_image_becomes_black() -> None:
    img = Image.new("I;16", (2, 2), 5000)
    out = load_image(encoded(img, "PNG"))
    assert np.asarray(out).max() == 0


def test_cmyk_jpeg_becomes_rgb() -> None:
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    data = encoded(img, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = load_image(data)
    assert out.mode == "RGB" and out.size == (16, 16)
    r, g, b = out.getpixel((8, 8))
    assert r >= 245 and g <= 10 and b <= 10


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    data = encoded(img, "JPEG", exif=exif)
    assert Image.open(io.BytesIO(data)).size == (40, 20)
    out = load_image(data)
    assert out.size == (20, 40)
    assert out.mode == "RGB"


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = load_image(data)
    assert out.mode == "RGB" and out.size == (8, 8)
    assert out.getpixel((4, 4)) == (255, 0, 0)


def test_path_and_bytes_give_the_same_pixels(tmp_path: Path) -> None:
    img = Image.new("RGB", (5, 3), (1, 2, 3))
    path = tmp_path / "a.png"
    img.save(path)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(load_image(path.read_bytes())))
    assert np.array_equal(np.asarray(load_image(str(path))), np.asarray(img))


# -- refusals ----------------------------------------------------------------------------------------


def test_zero_byte_file_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match=r"image 'empty.png' is empty \(0 bytes\)"):
        load_image(path)
    with pytest.raises(InvalidInputError, match=r"image 'upload' is empty \(0 bytes\)"):
        load_image(b"")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="image 'nope.png' not found"):
        load_image(tmp_path / "nope.png")


def test_truncated_jpeg() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encoded(img, "JPEG", quality=90)
    with pytest.raises(InvalidInputError) as info:
        load_image(data[: len(data) // 2], name="half.jpg")
    message = str(info.value)
    assert message.startswith("image 'half.jpg' could not be read as an image (")
    assert "allowed formats: PNG, JPEG, GIF, WEBP, BMP, TIFF" in message


def test_text_bytes_and_renamed_text_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="could not be read as an image \\(UnidentifiedImageError\\)"):
        load_image(b"hello, I am definitely not a picture")
    fake = tmp_path / "fake.png"
    fake.write_text("plain text pretending to be a PNG", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="image 'fake.png' could not be read as an image"):
        load_image(fake)


def test_svg_is_refused() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    with pytest.raises(InvalidInputError, match="could not be read as an image.*allowed formats: PNG"):
        load_image(svg, name="logo.svg")


def test_format_outside_the_allow_list() -> None:
    data = encoded(Image.new("RGB", (4, 4)), "PPM")
    with pytest.raises(InvalidInputError, match="image 'upload' is PPM; allowed formats: PNG, JPEG, GIF, WEBP, BMP, TIFF"):
        load_image(data)


def test_over_max_bytes(tmp_path: Path) -> None:
    data = encoded(Image.new("RGB", (16, 16)), "PNG")
    with pytest.raises(InvalidInputError, match=f"is {len(data):,} bytes; the limit is 10 bytes"):
        load_image(data, max_bytes=10)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(InvalidInputError, match=f"image 'big.png' is {len(data):,} bytes; the limit is 10 bytes"):
        load_image(path, max_bytes=10)
    assert load_image(data, max_bytes=len(data)).size == (16, 16)  # the limit itself is allowed


def test_over_max_pixels_small_limit() -> None:
    data = encoded(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(InvalidInputError, match="is 100x100 = 10,000 pixels; the limit is 5,000 pixels"):
        load_image(data, max_pixels=5_000)
    assert load_image(data, max_pixels=10_000).size == (100, 100)


def test_header_only_large_png_refused_before_decoding() -> None:
    data = header_only_png(8000, 8000)  # 64 Mpx claimed in a few hundred bytes
    assert len(data) < 2_000
    with pytest.raises(InvalidInputError, match="is 8000x8000 = 64,000,000 pixels; the limit is 40,000,000 pixels"):
        load_image(data)


def test_decompression_bomb_is_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        load_image(header_only_png(30000, 30000), name="bomb.png")
    assert str(info.value).startswith("image 'bomb.png' ")


def test_decompression_bomb_message_names_the_limit() -> None:
    # Pillow refuses this inside open() before the width/height are available; the count is exact.
    with pytest.raises(InvalidInputError, match="is 900,000,000 pixels; the limit is 40,000,000 pixels"):
        load_image(header_only_png(30000, 30000))
