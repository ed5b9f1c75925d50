"""Folders of images as arrays: PNG, JPEG and BMP files of one size, 1-bit, 8-bit grey or 8-bit
colour, read with Pillow (:func:`read_image_folder`), for :mod:`pyrovamp.data.sources`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "read_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
"""The image files of a folder (case-insensitive)."""

_GREY_MODES = ("1", "L", "LA")
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")


def _open_image(path: Path):
    from PIL import Image  # Pillow: only a folder of images needs it

    try:
        return Image.open(path)
    except Exception as e:  # Pillow raises several types for a file it cannot read
        raise ValueError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def read_image_folder(folder) -> np.ndarray:
    """The images in ``folder`` and its subfolders (:data:`IMAGE_SUFFIXES`, sorted by path), all
    of one size: ``(N, H, W)`` uint8 for grey images (0/1 when every one is 1-bit), ``(N, H, W,
    3)`` when any is in colour (RGBA and palettes become RGB, grey ones RGB too).

    Raises:
        ValueError: no images, an unreadable one, a 16-bit or floating-point one (an 8-bit
            conversion would clip it), or images of another size (naming the first file of
            another size and both sizes) -- checked before any image is decoded.
    """
    folder = Path(folder)
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    sizes, modes = [], []
    for p in files:  # headers only
        with _open_image(p) as img:
            sizes.append(img.size)
            modes.append(img.mode)
    for p, size in zip(files, sizes, strict=True):
        if size != sizes[0]:
            raise ValueError(
                f"{folder}: images of different sizes: {p} is {size[0]}x{size[1]}, "
                f"{files[0].name} {sizes[0][0]}x{sizes[0][1]} (resize them to one size)"
            )
    for p, mode in zip(files, modes, strict=True):
        if mode not in _EIGHT_BIT_MODES:  # 16-bit or float grey: clipped by an 8-bit convert
            raise ValueError(
                f"{p}: image mode {mode!r} (16-bit or floating grey); pyrovamp reads 1-bit, "
                "8-bit grey and 8-bit colour images: convert them, or save the values as .npy"
            )
    binary = all(m == "1" for m in modes)
    colour = any(m not in _GREY_MODES for m in modes)
    w, h = sizes[0]
    out = np.empty((len(files), h, w, 3) if colour else (len(files), h, w), dtype=np.uint8)
    for i, p in enumerate(files):
        with _open_image(p) as img:
            try:
                if binary:
                    out[i] = np.asarray(img, dtype=np.uint8)
                else:
                    out[i] = np.asarray(img.convert("RGB" if colour else "L"), dtype=np.uint8)
            except Exception as e:  # a truncated or corrupt file fails when decoded
                raise ValueError(f"{p}: unreadable image ({type(e).__name__}: {e})") from None
    return out
