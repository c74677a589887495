"""Test-time resize of the released pipeline (mmcv ``Resize(scale=(2048, 448), keep_ratio=True)``): keep ratio,
short side 448, long side <= 2048."""
from typing import Tuple

import numpy as np


def resized_shape(height: int, width: int, short_side: int = 448, long_side: int = 2048) -> Tuple[int, int]:
    """(H1, W1) with factor f = min(long / max(H, W), short / min(H, W)) and round-half-up (mmcv rule).
    ``short_side <= 0`` keeps the size."""
    if short_side <= 0:
        return height, width
    factor = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(image: np.ndarray, short_side: int = 448, long_side: int = 2048) -> np.ndarray:
    """(H, W, 3) uint8 -> (H1, W1, 3) uint8 with OpenCV INTER_LINEAR (no antialias), as the release."""
    import cv2

    new_height, new_width = resized_shape(image.shape[0], image.shape[1], short_side, long_side)
    if (new_height, new_width) == image.shape[:2]:
        return image
    return cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
