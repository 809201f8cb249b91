"""Image preprocessing: uint8 photographs -> a model's input tensor, as its source does it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side, centre-crop, scale to [0, 1], normalise per channel.

    ``mean`` and ``std`` are in [0, 1] units; a source that normalises 0-255 pixels (Detectron2)
    gives its statistics divided by 255. ``bgr`` reverses the channels first (Caffe2 lineage).
    """

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    bgr: bool = False

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> float32 (n, 3, size, size), the model's input."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        if self.bgr:
            x = x.flip(1)
        height, width = x.shape[-2:]
        scale = self.resize / min(height, width)
        new_size = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
        x = torch.nn.functional.interpolate(
            x, size=new_size, mode=self.interpolation, align_corners=False, antialias=True
        )
        top = (new_size[0] - self.size) // 2
        left = (new_size[1] - self.size) // 2
        x = x[..., top:top + self.size, left:left + self.size]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()
