"""A small, deterministic folder of real-photo JPEGs for few-label benchmarks.

`make_photo_folder(root)` cuts small crops out of scikit-learn's two sample photos (china.jpg,
a temple by a lake; flower.jpg, a dahlia before leaves; 427x640 each) and writes them as JPEGs
in `train/CLASS/` and `test/CLASS/`, four classes, two regions of each photo:

| class | photo | region (x, y in pixels) |
|---|---|---|
| `temple` | china.jpg | the pagoda, x 100-330, y 20-400 |
| `lake` | china.jpg | the lake and the trees on its right, x 380-640, y 200-427 |
| `petals` | flower.jpg | the flower head, x 170-450, y 80-340 |
| `leaves` | flower.jpg | the leaves on the left, x 0-170, y 0-427 |

Each crop is a random square of 40-100 pixels inside its region, resized to `size` (bilinear),
with a little pixel noise, saved at JPEG quality 90. The same `seed` writes the same files, so
`kzoo run` on the folder splits and reads the same images every time.
"""

from __future__ import annotations

import json
import os

import numpy as np

CLASSES = ("lake", "leaves", "petals", "temple")
# (photo index in load_sample_images(), (x0, y0, x1, y1)): see the module docstring.
REGIONS = {"temple": (0, (100, 20, 330, 400)), "lake": (0, (380, 200, 640, 427)),
           "petals": (1, (170, 80, 450, 340)), "leaves": (1, (0, 0, 170, 427))}
SIDES = (40, 100)  # the crop's side in the photo, before resizing


def make_photo_folder(root: str, train_per_class: int = 20, test_per_class: int = 100, size: int = 32,
                      seed: int = 0) -> str:
    """Writes (once) a `train/` and `test/` folder of photo crops, one sub-folder per class.

    Args:
        root: the folder to write; reused when it holds a complete folder made with the same
            arguments.
        train_per_class: training images per class (the few labels). Defaults to `20`.
        test_per_class: test images per class. Defaults to `100`.
        size: side of the square JPEGs. Defaults to `32`.
        seed: seed of the crops' positions, sides and noise. Defaults to `0`.

    Returns:
        `root`.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images

    settings = {"train_per_class": train_per_class, "test_per_class": test_per_class, "size": size, "seed": seed}
    done = os.path.join(root, ".complete")
    if os.path.isfile(done):
        with open(done) as f:
            if json.load(f) == settings:
                return root
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in CLASSES:
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for stale in os.listdir(folder):
                os.remove(os.path.join(folder, stale))
            index, (x0, y0, x1, y1) = REGIONS[name]
            photo = photos[index]
            for i in range(count):
                side = int(rng.integers(SIDES[0], min(SIDES[1], x1 - x0, y1 - y0) + 1))
                top = int(rng.integers(y0, y1 - side + 1))
                left = int(rng.integers(x0, x1 - side + 1))
                crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
                pixels = np.asarray(crop, dtype="int16") + rng.integers(-8, 9, (size, size, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(
                    os.path.join(folder, f"{name}-{i:04d}.jpg"), quality=90)
    with open(done, "w") as f:
        json.dump(settings, f)
    return root


if __name__ == "__main__":
    import sys

    print(make_photo_folder(sys.argv[1] if len(sys.argv) > 1 else os.path.join("benchmarks", "out", "photos-4")))
