"""Checks of a user's image files before any work: readable, whole, of a sane size, and of a
mode its reader keeps.

Readers convert what they open (`.convert("RGB")`, `.convert("L")`), and a conversion quietly
changes some images: a 16-bit or float image is clipped to 8 bits, a CMYK one gets the wrong
colors, an alpha channel is dropped with whatever it hid. Each kind of file says which modes
its reader keeps as they are; the rest are refused with the file named, before training
starts rather than when a batch first reaches the file.

The checks stay cheap enough for thousands of files: a header read for the size and mode,
PNG's own chunk checksums (`verify`) for a whole file, and for other formats a decode at the
smallest scale the format allows (JPEG decodes at 1/8) to reach the end of the data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lightning_modules.core.errors import InputDataError

# Far above any photograph a method here uses (a 40-megapixel camera is 7952 x 5304) and under
# PIL's own decompression-bomb limit: a file that decodes to more is refused unread.
MAX_PIXELS = 8192 * 8192

MODE_NAMES = {
    "1": "1-bit", "L": "8-bit grayscale", "P": "palette", "RGB": "RGB", "RGBA": "RGBA", "LA": "grayscale + alpha",
    "PA": "palette + alpha", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV", "I": "32-bit integer",
    "F": "32-bit float", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit",
}
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


@dataclass(frozen=True)
class ImageKind:
    """What one reader accepts: the modes it reads as they are, and whether it keeps an alpha
    channel; one it drops is allowed only when every pixel is opaque, so that nothing is lost."""

    name: str                 # in messages: "subject image", "parsing map", ...
    modes: frozenset[str]
    keeps_alpha: bool
    expected: str             # what to save instead, in messages


# Photographs read with .convert("RGB"): grayscale, bilevel and palette images convert exactly.
PHOTO = ImageKind("image", frozenset({"RGB", "L", "1", "P"}), keeps_alpha=False,
                  expected="save it as 8-bit RGB or grayscale")
# Subject images are read with .convert("RGBA"): their alpha channel is the subject's mask.
SUBJECT = ImageKind("subject image", frozenset({"RGB", "L", "1", "P", "RGBA", "LA", "PA"}), keeps_alpha=True,
                    expected="save it as 8-bit RGB, or RGBA with the subject's mask as alpha")
# Masks are read with .convert("L") > 0; an alpha channel is not where they are read from.
MASK = ImageKind("mask", frozenset({"1", "L", "P", "RGB"}), keeps_alpha=False,
                 expected="save it as an 8-bit grayscale PNG, 0 for background")
# Label maps are read by value (palette images by index, a transparent index is just a label):
# any conversion would change the labels.
LABELS = ImageKind("parsing map", frozenset({"L", "P"}), keeps_alpha=True,
                   expected="save it as an 8-bit grayscale or palette PNG whose values are parsing_classes indices")


def _describe(mode: str) -> str:
    return MODE_NAMES.get(mode, mode)


def _as_a(name: str) -> str:
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def _check_opaque(image: Image.Image, path: Path, kind: ImageKind) -> None:
    alpha = (image if image.mode in ("RGBA", "LA", "PA") else image.convert("RGBA")).getchannel("A")
    if alpha.getextrema()[0] < 255:
        raise InputDataError(f"{path}: {_describe(image.mode)} image with transparent pixels, but reading it as "
                             f"{_as_a(kind.name)} drops its alpha channel; {kind.expected}")


def _check_mode(image: Image.Image, path: Path, kind: ImageKind) -> bool:
    """True when the whole image had to be decoded to check it (its alpha channel)."""
    if _has_alpha(image) and not kind.keeps_alpha:
        _check_opaque(image, path, kind)
        return True
    if image.mode not in kind.modes:
        raise InputDataError(f"{path}: {_describe(image.mode)} image ({image.mode}), which reading it as "
                             f"{_as_a(kind.name)} would change; {kind.expected}")
    return False


def _read_to_end(image: Image.Image) -> None:
    if image.format == "PNG":
        image.verify()   # every chunk's CRC up to IEND, without decompressing
        return
    if image.format == "JPEG":
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()


def check_image(path: Path, kind: ImageKind = PHOTO) -> tuple[int, int]:
    """(width, height) of an image file its reader can use as it is; an InputDataError naming
    the file otherwise (unreadable, empty, truncated, too large, or of a mode the reader changes)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # PIL warns, then refuses, far above MAX_PIXELS; either way the file is refused here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size = image.size
                if size[0] * size[1] > MAX_PIXELS:
                    raise InputDataError(f"{path}: {size[0]}x{size[1]} pixels, more than the {MAX_PIXELS:,} "
                                         f"{_as_a(kind.name)} may have; downscale it")
                if not _check_mode(image, path, kind):
                    _read_to_end(image)
                return size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputDataError(f"{path}: more than {MAX_PIXELS:,} pixels (a decompression bomb?); downscale it") from None
    except UnidentifiedImageError:
        detail = "empty file" if path.is_file() and path.stat().st_size == 0 else "UnidentifiedImageError"
        raise InputDataError(f"{path}: not a readable image ({detail})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        detail = " ".join(str(err).split()) or err.__class__.__name__
        raise InputDataError(f"{path}: not a readable image (truncated or corrupt: {detail})") from None
