"""A folder of the user's images as a :class:`ppvae.data.Dataset`: :func:`load_image_folder`.

Two layouts are read:

* **class subfolders** (torchvision's ``ImageFolder`` layout, ``root/<class>/<image>``): the
  subfolder names, sorted, are the classes and each image gets its folder's label (for a
  conditional model such as ``cvae``); listed by :class:`torchvision.datasets.ImageFolder`;
* **a flat folder** of images (``root/<image>``): no labels.

Image files are those torchvision reads (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.ppm``,
``.pgm``, ``.tif``, ``.tiff``, ``.webp``, any case); hidden files and folders (names starting with
a dot) and other files are ignored. A folder holding both images and subfolders of images is
refused as ambiguous.

Each image is decoded with Pillow (EXIF orientation applied, the first frame of a multi-page
file) and scaled to grey levels in [0, 1]: 8-bit images divided by 255, 16-bit ones by 65535.
Colour: ``mode="L"`` converts to one grey channel (ITU-R 601-2 luma, as Pillow's ``L``),
``mode="RGB"`` to three channels (a grey image repeated), and ``mode=None`` keeps what is found:
one channel when every image is grey (a grey mode, or RGB with equal channels), else RGB. An
alpha channel is dropped. Sizes: every image must have the same height and width unless ``size``
is given, which resizes each (bilinear, antialiased) to it; without it, two files of different
sizes are named in the error.

The images are split 80 / 10 / 10 with the seed (:func:`ppvae.data.user.from_tensor`) and may be
binarized for a Bernoulli likelihood like MNIST (``binarize``). The record's ``image_shape`` is
``(H, W)`` for grey images and ``(3, H, W)`` for colour ones (rows flattened channel-first), so
figures draw the rows as images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datasets import Dataset

__all__ = ["GREY_MODES", "IMAGE_MODES", "image_array", "image_files", "load_image_folder"]

IMAGE_MODES = ("L", "RGB")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ORIENTATION = 0x0112  # EXIF tag; values 5 to 8 turn the image by 90 degrees


def _is_image(path: str) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _holds_images(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return any(e.is_file() and _is_image(e.path) for e in it)


def image_files(root: str | os.PathLike) -> tuple[list[tuple[Path, int]], tuple[str, ...] | None]:
    """The images of a folder with their labels, and the class names (None: a flat folder).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: not a folder, no images, images next to class subfolders, or a class
            subfolder without images.
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of images")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    flat = [Path(e.path) for e in entries if e.is_file() and _is_image(e.path)]
    subdirs = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]

    class _Classes(ImageFolder):
        def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
            return subdirs, {c: i for i, c in enumerate(subdirs)}

    if subdirs and any(_holds_images(root / d) for d in subdirs):
        if flat:
            raise ValueError(f"{root} holds both image files ({flat[0].name}, ...) and class "
                             f"subfolders ({subdirs[0]}, ...); put every image in a class "
                             "subfolder, or all of them in one flat folder")
        try:
            folder = _Classes(str(root), loader=lambda p: p, is_valid_file=_is_image)
        except FileNotFoundError as e:  # a class folder without images
            raise ValueError(f"{root}: {e}") from None
        return [(Path(p), int(y)) for p, y in folder.samples], tuple(folder.classes)
    if not flat:
        raise ValueError(f"no images in {root} (looked for .png, .jpg, .jpeg, .bmp, .ppm, .pgm, "
                         ".tif, .tiff, .webp files, there or in class subfolders)")
    return [(p, -1) for p in flat], None


def _oriented_size(path: Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
            turned = img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    return (w, h) if turned else (h, w)


def image_array(img: Any) -> np.ndarray:
    """A PIL image as float32 ``[H, W, C]`` in [0, 1]: C = 1 for grey modes, 3 otherwise.

    Raises:
        TypeError: ``img`` is not a PIL image.
        ValueError: a floating-point (``F``) image, whose range is unknown.
    """
    from PIL import Image

    if not isinstance(img, Image.Image):
        raise TypeError(f"not a PIL image: {type(img).__name__}")
    if img.mode == "F":
        raise ValueError("a floating-point image (mode F) has no known range; save it as an "
                         "8- or 16-bit image")
    if img.mode.startswith("I"):  # 16-bit (and 32-bit integer) grey levels
        return (np.asarray(img, dtype=np.float64) / 65535.0).clip(0, 1).astype(
            np.float32)[..., None]
    if img.mode in GREY_MODES:
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None] / 255.0
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image file as float32 ``[C, H, W]`` in [0, 1], resized to ``size`` if given."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = image_array(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    chw = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if size is not None and tuple(chw.shape[1:]) != size:
        chw = torch.nn.functional.interpolate(chw[None], size=size, mode="bilinear",
                                              antialias=True, align_corners=False)[0]
        chw = chw.clamp(0, 1)
    return chw.numpy()


def _to_mode(images: list[np.ndarray], mode: str | None) -> tuple[np.ndarray, str]:
    """Stack ``[C, H, W]`` images in one mode: ``[N, C, H, W]`` and the mode used."""
    def grey(a: np.ndarray) -> bool:
        return a.shape[0] == 1 or bool((a[0] == a[1]).all() and (a[1] == a[2]).all())

    if mode is None:
        mode = "L" if all(grey(a) for a in images) else "RGB"
    if mode == "L":
        luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None, None]
        out = [a if a.shape[0] == 1 else (a * luma).sum(0, keepdims=True) for a in images]
    else:
        out = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in images]
    return np.stack(out), mode


def load_image_folder(root: str | os.PathLike, *, size: Sequence[int] | None = None,
                      mode: str | None = None, binarize: str | None = None, seed: int = 0,
                      progress: bool | None = None, dtype: torch.dtype = torch.float32,
                      device: str | torch.device = "cpu") -> Dataset:
    """The images in folder ``root`` as a :class:`Dataset` (module docstring).

    Args:
        root: a folder of images, or of class subfolders of images.
        size: ``(H, W)`` to resize every image to; None: all images must have one size.
        mode: ``"L"`` (grey), ``"RGB"``, or None: grey when every image is grey, else RGB.
        binarize: None, ``"static"``, ``"threshold"`` or ``"dynamic"`` (for a Bernoulli
            likelihood), as :func:`ppvae.data.load_dataset`.
        seed: seeds the 80 / 10 / 10 split and the binarization.
        progress: a bar over the images decoded (None: only on a terminal).
        dtype: dtype of the data tensors (labels are int64).
        device: device of the data and label tensors.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: fewer than 3 images, unreadable files (named), two files of different sizes
            without ``size`` (both named), an unknown ``mode`` or ``size``.
    """
    from ..core.progress import bar
    from .user import from_tensor

    if mode not in (None, *IMAGE_MODES):
        raise ValueError(f"mode must be one of {IMAGE_MODES} or None, got {mode!r}")
    shape = None if size is None else tuple(int(s) for s in size)
    if shape is not None and (len(shape) != 2 or min(shape) < 1):
        raise ValueError(f"size must be (H, W) of positive integers, got {tuple(size or ())}")
    files, classes = image_files(root)
    if len(files) < 3:
        raise ValueError(f"{root}: {len(files)} image(s); train, validation and test need at "
                         "least 3")
    if shape is None:
        first = _oriented_size(files[0][0])
        for path, _ in files[1:]:
            hw = _oriented_size(path)
            if hw != first:
                raise ValueError(
                    f"images of different sizes: {files[0][0]} is {first[0]} x {first[1]} "
                    f"(height x width), {path} is {hw[0]} x {hw[1]}; resize them all with "
                    "size=(H, W)")
    images = []
    with bar(progress, total=len(files), desc=f"reading {Path(root).name}", unit="img") as b:
        for path, _ in files:
            images.append(_decode(path, shape))
            b.update()
    x, mode = _to_mode(images, mode)
    labels = None if classes is None else torch.tensor([y for _, y in files])
    image_shape = x.shape[2:] if mode == "L" else x.shape[1:]
    return from_tensor(torch.from_numpy(x).reshape(len(x), -1), labels,
                       name=Path(root).name or str(root), image_shape=image_shape,
                       binarize=binarize, seed=seed, classes=classes, dtype=dtype, device=device)
