"""Image folders as file lists: which files are images, what their headers say, and the tf.data
step that decodes and resizes one of them (to uint8 pixels).

Listing a folder reads each file's header and its last bytes, never its pixels, so a split can be
made from the file list of a hundred thousand photos in seconds. A file is skipped (with one
warning naming it) when its header is not that of a PNG, JPEG, GIF or BMP image, when it reports
a zero size, or when a PNG or JPEG lacks its end marker (a truncated download). A file whose
header and end are intact but whose compressed data is damaged is not caught here; decoding it
fails the pipeline with TensorFlow's own error.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np

from kzoo.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


_FIRST_READ = 4096  # bytes read first (one page): most headers; a longer one takes more reads
_END_READ = 4096  # bytes read from the end: where a JPEG's end marker sits, give or take trailers


def image_header(path: str):
    """`(height, width, colour)` read from an image file's header, or `None` when the file is
    not a complete PNG, JPEG, GIF or BMP image (see the module docstring).

    `colour` is whether the decoded image has colour channels (RGB, RGBA, palette); grayscale
    with or without alpha is `False`.

    Listing a folder calls this once per file, so it costs a handful of system calls (`os.pread`
    of the first bytes, and of the last ones when the file is larger) and no buffered file.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.pread(fd, _FIRST_READ, 0)
        size = len(data) if len(data) < _FIRST_READ else os.lseek(fd, 0, os.SEEK_END)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_header(fd, data, size)
        if data.startswith(_PNG_SIGNATURE):
            return _png_header(fd, data, size)
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            width, height = struct.unpack("<HH", data[6:10])
            return (height, width, True) if height and width else None
        if data.startswith(b"BM") and len(data) >= 30:
            width, height = struct.unpack("<ii", data[18:26])
            bits = struct.unpack("<H", data[28:30])[0]
            return (abs(height), width, bits > 8) if height and width > 0 else None
        return None
    except (OSError, struct.error):
        return None
    finally:
        os.close(fd)


def _tail(fd, data, size, count):
    """The last `count` bytes of the file (from `data` when it holds the whole file)."""
    if size <= len(data):
        return data[-count:]
    return os.pread(fd, count, size - count)


def _png_header(fd, data, size):
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    colour_type = data[25]
    if not (width and height) or colour_type not in (0, 2, 3, 4, 6):
        return None
    if b"IEND" not in _tail(fd, data, size, 64):
        return None  # truncated
    return height, width, colour_type in (2, 3, 6)


def _jpeg_header(fd, data, size):
    buf, start, pos = data, 0, 2  # `buf` holds the file's bytes from `start`
    while True:
        # Fill bytes, a marker, its length and a frame header fit in 16 bytes (more fill bytes
        # than that go round the loop again).
        i = pos - start
        if i + 16 > len(buf) and start + len(buf) < size:
            buf, start, i = os.pread(fd, _FIRST_READ, pos), pos, 0
        if i + 1 < len(buf) and buf[i] == 0xFF and buf[i + 1] != 0xFF:
            fill = 1  # the usual case: one 0xFF, then the marker
        else:
            head = buf[i:i + 16]
            fill = len(head) - len(head.lstrip(b"\xff"))
            if fill == len(head):
                if not head:
                    return None
                pos += fill
                continue
        marker = buf[i + fill]
        pos += fill + 1
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue  # markers without a length
        segment = buf[i + fill + 1:i + fill + 9]
        if len(segment) < 8:
            segment = os.pread(fd, 8, pos)
        if len(segment) < 2:
            return None
        length = (segment[0] << 8) | segment[1]
        if marker in _SOF_MARKERS:  # length, precision, height, width, components
            if len(segment) < 8:
                return None
            height, width = (segment[3] << 8) | segment[4], (segment[5] << 8) | segment[6]
            colour = segment[7] >= 3
            break
        if length < 2 or marker == 0xDA:  # a bad length, or image data before any frame header
            return None
        pos += length
    # Entropy-coded data escapes 0xFF, so an end-of-image marker near the end is the real one;
    # some cameras append a few bytes after it.
    if not (height and width) or (b"\xff\xd9" not in _tail(fd, data, size, 64)
                                  and b"\xff\xd9" not in _tail(fd, data, size, _END_READ)):
        return None
    return height, width, colour


@dataclass
class FolderListing:
    """The images of a folder of class sub-folders, split by its `train/` and `test/` folders
    when it has them (`paths["train"]`, `paths["test"]`), else all under `paths["train"]`."""

    root: str
    class_names: list
    paths: dict = field(default_factory=dict)  # split -> list of file paths
    labels: dict = field(default_factory=dict)  # split -> int64 array
    channels: int = 3
    skipped: list = field(default_factory=list)


def list_folder(path: str, warn: bool = True) -> FolderListing:
    """Lists a folder of class sub-folders (one per class) without decoding any image.

    A folder with `train/` and `test/` sub-folders keeps that split. Unreadable files are
    skipped with one warning naming them; a class folder with no readable image, fewer than 2
    classes, or a `test/` folder whose classes differ from `train/`'s are refused with a
    `DataError`. The images are decoded with 3 channels when any of them has colour, else 1.

    Args:
        path: the folder.
        warn: warn about skipped files. Defaults to `True`.
    """
    if not os.path.isdir(path):
        raise DataError(f"No such data folder: {path}")
    parts = {"train": path}
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        parts = {"train": os.path.join(path, "train"), "test": os.path.join(path, "test")}
    listing = FolderListing(root=path, class_names=[])
    colour = False
    for split, folder in parts.items():
        classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        if not listing.class_names:
            if len(classes) < 2:
                raise DataError(
                    f"{folder} needs one sub-folder per class and at least 2 classes; found "
                    f"{len(classes)}. Received: {folder}"
                )
            listing.class_names = classes
        elif classes != listing.class_names:
            raise DataError(f"The class folders of {folder} differ from train's {listing.class_names}. "
                            f"Received: {classes}")
        paths, labels = [], []
        for label, name in enumerate(listing.class_names):
            class_dir = os.path.join(folder, name)
            files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
            files = [os.path.join(class_dir, f) for f in files]
            headers = [image_header(f) for f in files]
            readable = [f for f, header in zip(files, headers) if header is not None]
            listing.skipped += [f for f, header in zip(files, headers) if header is None]
            colour = colour or any(header[2] for header in headers if header is not None)
            paths += readable
            labels += [label] * len(readable)
            if not readable:
                raise DataError(
                    f"Class folder {class_dir} holds no readable image ({', '.join(IMAGE_EXTENSIONS)}); "
                    f"add images or remove the folder. Received: {class_dir}"
                )
        listing.paths[split] = paths
        listing.labels[split] = np.asarray(labels, dtype="int64")
    listing.channels = 3 if colour else 1
    if listing.skipped and warn:
        shown = ", ".join(os.path.relpath(p, path) for p in listing.skipped[:3])
        shown += ", ..." if len(listing.skipped) > 3 else ""
        warnings.warn(f"kzoo: skipped {len(listing.skipped)} unreadable image file(s) in {path}: {shown}",
                      stacklevel=3)
    return listing


def fit_pixels(image, size):
    """A uint8 image `(height, width, channels)` at `size`: as it is when it has that size
    already, else resized (bilinear) and rounded back to uint8 (at most half a grey level from
    the float result).

    Streamed images stay uint8 up to the model, which casts them to its input dtype: a quarter
    of float32's bytes to batch, prefetch, cache and copy to an accelerator (timm's loaders do
    the same and normalize on the device).
    """
    import tensorflow as tf

    size = tuple(int(d) for d in size)
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
    fitted = tf.cond(same, lambda: image,
                     lambda: tf.saturate_cast(tf.round(tf.image.resize(image, size)), tf.uint8))
    fitted.set_shape((*size, image.shape[-1]))
    return fitted


def decoder(image_size, channels: int):
    """A tf.data map function `(path, label) -> (image, label)`: reads and decodes one file with
    `channels` channels (grayscale copied into R, G and B; alpha dropped) and fits it to
    `image_size` (`fit_pixels`), as uint8 pixel values 0-255."""
    import tensorflow as tf

    height, width = (int(d) for d in image_size)

    @tf.autograph.experimental.do_not_convert  # plain graph code; converting it costs ~0.3 s per trace
    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        return fit_pixels(image, (height, width)), label

    return decode
