"""Images: decoded as a viewer shows them (EXIF orientation applied), converted to 8-bit RGB by their real range.

Pixel values become 8-bit by one rule, for files and arrays alike (`to_uint8_rgb`):
- uint8: as is; bool: 0 / 255.
- uint16 (and 16-bit image modes): value / 257, the full 16-bit range onto 0-255.
- other integer types: as 8-bit when every value is in 0-255, as 16-bit when in 0-65535; anything else is refused.
- float: [0, 1] -> x 255; [-1, 1] with negative values -> (x + 1) x 127.5; [0, 255] -> as is; NaN, infinity or any
  other range is refused with the range found.
Alpha is dropped (as `PIL.Image.convert("RGB")` does); palette, CMYK and other modes convert through Pillow.

The returned image keeps the original's size, before any pre-shrink, in `image.info["original_size"]`: the token
map's boxes are in those pixels.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import OmniLabInputError
from .common import LIMITS, as_numpy, check_file, describe, value_range

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ORIGINAL_SIZE = "original_size"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def load_image(image):
    """Decode one image to RGB PIL.

    Args:
        image: a path, a PIL image, or an array `(H, W)`, `(H, W, 1|3|4)` or `(1|3|4, H, W)` (value rule: module
            docstring).
    Returns:
        an RGB `PIL.Image.Image` oriented as its EXIF tag says; images over `LIMITS.preshrink_pixels` are shrunk
        (aspect kept) before the model's processor resizes them into its patch budget.
    """
    from PIL import Image, ImageOps

    if isinstance(image, (str, os.PathLike)):
        return _load_file(Path(image))
    if isinstance(image, Image.Image):
        _check_pixels(image.size, "image")
        oriented = ImageOps.exif_transpose(image)
        return _finish(oriented, oriented.size, "image")
    array = as_numpy(image)
    if array is None:
        raise OmniLabInputError(
            f"image {describe(image)} is not a path, PIL image or array; pass one of those per image"
        )
    pixels = to_uint8_rgb(array, "image")
    return _finish(Image.fromarray(pixels), (pixels.shape[1], pixels.shape[0]), "image")


def _load_file(path: Path):
    from PIL import Image, ImageOps

    check_file(path, "image", IMAGE_EXTENSIONS, LIMITS.image_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own pixel check runs below
            try:
                opened = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
            header_size = opened.size
            if header_size[0] * header_size[1] > LIMITS.preshrink_pixels:
                opened.draft("RGB", _shrunk_size(header_size))  # JPEG decodes at a reduced size directly
            _check_pixels(opened.size, f"image {str(path)!r}")
            opened.load()
            orientation = opened.getexif().get(0x0112, 1)
            oriented = ImageOps.exif_transpose(opened)
    except OmniLabInputError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError) as error:
        raise OmniLabInputError(
            f"image {str(path)!r} could not be decoded ({error}); the file is corrupt, truncated or not an "
            f"image. Re-export it as PNG or JPEG."
        ) from None
    if orientation in _TRANSPOSED_ORIENTATIONS:
        header_size = header_size[::-1]
    return _finish(oriented, header_size, f"image {str(path)!r}")


def _check_pixels(size: tuple[int, int], what: str) -> None:
    pixels = size[0] * size[1]
    if pixels > LIMITS.image_pixels:
        raise OmniLabInputError(
            f"{what} is {size[0]} x {size[1]} = {pixels / 1e6:.0f} Mpx, too large to decode safely (limit "
            f"{LIMITS.image_pixels / 1e6:.0f} Mpx, about {3 * LIMITS.image_pixels / 2**30:.1f} GiB decoded); "
            f"downscale it first or raise omni_lab.media.LIMITS.image_pixels"
        )
    if min(size) < 1:
        raise OmniLabInputError(f"{what} has no pixels ({size[0]} x {size[1]})")


def _pil_to_rgb(image, what: str):
    """RGB by the module's value rule: high-bit-depth and float modes go through `to_uint8_rgb`."""
    from PIL import Image

    if image.mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(to_uint8_rgb(np.asarray(image).astype(np.uint16), what))
    if image.mode in ("I", "F"):
        return Image.fromarray(to_uint8_rgb(np.asarray(image), what))
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise OmniLabInputError(f"{what}: mode {image.mode!r} cannot be converted to RGB ({error})") from None


def _finish(image, original_size: tuple[int, int], what: str):
    """Shrink (before the RGB conversion where Pillow can resize the mode: a 196 Mpx greyscale PNG is never held as
    RGB at full size), convert to RGB, and record the original size."""
    if image.mode in ("L", "RGB", "RGBA", "I", "F"):
        image = _pil_to_rgb(_shrink(image), what)
    else:
        image = _shrink(_pil_to_rgb(image, what))
    image.info[ORIGINAL_SIZE] = (int(original_size[0]), int(original_size[1]))
    return image


def original_size(image) -> tuple[int, int]:
    """The (width, height) the token map's boxes are in: the source's, before any pre-shrink."""
    return tuple(image.info.get(ORIGINAL_SIZE, image.size))


def _shrunk_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = math.sqrt(LIMITS.preshrink_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _shrink(image):
    if image.width * image.height <= LIMITS.preshrink_pixels:
        return image
    from PIL import Image

    return image.resize(_shrunk_size(image.size), Image.Resampling.BICUBIC, reducing_gap=3.0)


def to_uint8_rgb(array: np.ndarray, kind: str) -> np.ndarray:
    """`(H, W)`, `(H, W, 1|3|4)` or channel-first `(1|3|4, H, W)` -> `(H, W, 3)` uint8 by the module's value rule."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise OmniLabInputError(
            f"{kind} array of shape {array.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.shape[0] * array.shape[1] > LIMITS.image_pixels:
        _check_pixels((array.shape[1], array.shape[0]), kind)
    pixels = _to_uint8(array, kind)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def _to_uint8(array: np.ndarray, kind: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return _round(array.astype(np.float32) / 257.0)
    if np.issubdtype(array.dtype, np.integer):
        low, high = value_range(array)
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return _round(array.astype(np.float32) / 257.0)
        raise OmniLabInputError(
            f"{kind} array ({array.dtype}) has values in [{low:g}, {high:g}], which is neither 8-bit (0-255) nor "
            f"16-bit (0-65535); rescale it to uint8, uint16 or float in [0, 1]"
        )
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise OmniLabInputError(f"{kind} array contains NaN or infinite values; replace them before passing it")
        low, high = value_range(values)
        if low >= 0.0 and high <= 1.0:
            return _round(values * 255.0)
        if low >= -1.0 and high <= 1.0:
            return _round((values + 1.0) * 127.5)
        if low >= 0.0 and high <= 255.0:
            return _round(values)
        raise OmniLabInputError(
            f"{kind} array of floats spans [{low:g}, {high:g}]; pass floats in [0, 1] (or [-1, 1], or 0-255)"
        )
    raise OmniLabInputError(f"{kind} array has dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")


def _round(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
