"""Image folders as file lists: which files are images, what their headers say, and the tf.data
step that decodes and resizes one of them.

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
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_header(path: str):
    """`(height, width, colour)` read from an image file's header, or `None` when the file is
    not a complete PNG, JPEG, GIF or BMP image (see the module docstring).

    `colour` is whether the decoded image has colour channels (RGB, RGBA, palette); grayscale
    with or without alpha is `False`.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(_PNG_SIGNATURE):
                return _png_header(f, head)
            if head.startswith(b"\xff\xd8"):
                return _jpeg_header(f)
            if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
                width, height = struct.unpack("<HH", head[6:10])
                return (height, width, True) if height and width else None
            if head.startswith(b"BM") and len(head) >= 30:
                width, height = struct.unpack("<ii", head[18:26])
                bits = struct.unpack("<H", head[28:30])[0]
                return (abs(height), width, bits > 8) if height and width > 0 else None
    except (OSError, struct.error):
        return None
    return None


def _png_header(f, head):
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    colour_type = head[25]
    if not (width and height) or colour_type not in (0, 2, 3, 4, 6):
        return None
    f.seek(0, os.SEEK_END)
    f.seek(max(f.tell() - 64, 0))
    if b"IEND" not in f.read():
        return None  # truncated
    return height, width, colour_type in (2, 3, 6)


def _jpeg_header(f):
    f.seek(2)
    size = None
    while size is None:
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue  # markers without a length
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if marker in _SOF_MARKERS:
            frame = f.read(6)
            if len(frame) < 6:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            size = (height, width, frame[5] >= 3)
        elif length < 2:
            return None
        else:
            f.seek(length - 2, os.SEEK_CUR)
        if marker == 0xDA:  # start of scan before any frame header
            return None
    f.seek(0, os.SEEK_END)
    end = f.tell()
    # Entropy-coded data escapes 0xFF, so an end-of-image marker near the end is the real one;
    # some cameras append a few bytes after it.
    f.seek(max(end - 4096, 0))
    if b"\xff\xd9" not in f.read():
        return None
    return size if size[0] and size[1] else None


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
    stamps: dict = field(default_factory=dict)  # split -> list of (size, mtime_ns), for cache keys


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
        paths, labels, stamps = [], [], []
        for label, name in enumerate(listing.class_names):
            class_dir = os.path.join(folder, name)
            files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
            read = 0
            for file in files:
                file_path = os.path.join(class_dir, file)
                header = image_header(file_path)
                if header is None:
                    listing.skipped.append(file_path)
                    continue
                colour = colour or header[2]
                stat = os.stat(file_path)
                paths.append(file_path)
                labels.append(label)
                stamps.append((stat.st_size, stat.st_mtime_ns))
                read += 1
            if not read:
                raise DataError(
                    f"Class folder {class_dir} holds no readable image ({', '.join(IMAGE_EXTENSIONS)}); "
                    f"add images or remove the folder. Received: {class_dir}"
                )
        listing.paths[split] = paths
        listing.labels[split] = np.asarray(labels, dtype="int64")
        listing.stamps[split] = stamps
    listing.channels = 3 if colour else 1
    if listing.skipped and warn:
        shown = ", ".join(os.path.relpath(p, path) for p in listing.skipped[:3])
        shown += ", ..." if len(listing.skipped) > 3 else ""
        warnings.warn(f"kzoo: skipped {len(listing.skipped)} unreadable image file(s) in {path}: {shown}",
                      stacklevel=3)
    return listing


def decoder(image_size, channels: int):
    """A tf.data map function `(path, label) -> (image, label)`: reads and decodes one file with
    `channels` channels (grayscale copied into R, G and B; alpha dropped) and resizes it
    (bilinear) to `image_size`, as float32 pixel values 0-255."""
    import tensorflow as tf

    height, width = (int(d) for d in image_size)

    @tf.autograph.experimental.do_not_convert  # plain graph code; converting it costs ~0.3 s per trace
    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
        image.set_shape((height, width, channels))
        return image, label

    return decode
