"""Probe images for the embedded demo, cut from natural photos shipped inside installed packages.

No download: scikit-image's bundled data (the loaders that need no pooch), scikit-learn's two
sample images and matplotlib's sample photo. Each probe image is a random square crop of one
photo, at a random scale, possibly mirrored, resized to ``px`` pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "brick", "grass", "gravel", "moon", "coins", "clock",
    "page", "text", "cell",
)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def source_photos() -> list[np.ndarray]:
    """The natural photos the crops come from, as uint8 RGB arrays."""
    import matplotlib
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [_as_rgb(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS]
    photos += [_as_rgb(view) for view in skimage.data.stereo_motorcycle()[:2]]
    photos += [_as_rgb(image) for image in load_sample_images().images]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        import matplotlib.image

        photos.append(_as_rgb(matplotlib.image.imread(hopper)))
    return photos


def probe_images(n_images: int, px: int, seed: int) -> np.ndarray:
    """``n_images`` distinct crops, uint8 (n, px, px, 3)."""
    rng = np.random.default_rng(seed)
    photos = source_photos()
    out = np.empty((n_images, px, px, 3), dtype=np.uint8)
    for index in range(n_images):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.uniform(0.3, 1.0) * min(height, width))
        top = rng.integers(0, height - side + 1)
        left = rng.integers(0, width - side + 1)
        crop = photo[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
        resized = torch.nn.functional.interpolate(
            tensor, size=(px, px), mode="bilinear", antialias=True, align_corners=False
        )
        out[index] = resized[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    return out
