"""Moving digits: a small video set *generated* from scikit-learn's bundled digits.

No video data set ships with a PyPI wheel, so this one is made: each 8×8 digit of
``load_digits()`` (the zoo's split, :func:`hwmap.zoo.digits.digits_split`: 1,437 training
and 360 test images, values in [0, 1]) is pasted into a larger black frame and translated by
a constant velocity of -1, 0 or +1 pixel per frame along each axis (not both 0), bouncing off
the frame's edges. The label of a video is its digit's. Start positions and velocities come
from a seeded generator: the same arguments give the same arrays, byte for byte.

Like real video, consecutive frames are strongly correlated (the content moves by a pixel),
which is what a temporal delta layer exploits.
"""

from __future__ import annotations

import numpy as np

from hwmap.zoo.digits import digits_split

__all__ = ["moving_digits", "FRAME", "TIMESTEPS"]

#: Frame side (pixels) and frames per video.
FRAME = 16
TIMESTEPS = 8


def _trajectory(rng: np.random.Generator, frame: int, size: int, steps: int) -> list[tuple[int, int]]:
    span = frame - size
    pos = [int(rng.integers(0, span + 1)), int(rng.integers(0, span + 1))]
    velocities = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    vel = list(velocities[int(rng.integers(len(velocities)))])
    out = []
    for _ in range(steps):
        out.append((pos[0], pos[1]))
        for a in (0, 1):
            if not 0 <= pos[a] + vel[a] <= span:
                vel[a] = -vel[a]
            pos[a] += vel[a]
    return out


def _videos(images: np.ndarray, rng: np.random.Generator, frame: int, steps: int) -> np.ndarray:
    n, size = images.shape[0], images.shape[-1]
    x = np.zeros((n, steps, 1, frame, frame), np.float32)
    for i in range(n):
        for t, (r, c) in enumerate(_trajectory(rng, frame, size, steps)):
            x[i, t, 0, r:r + size, c:c + size] = images[i, 0]
    return x


def moving_digits(frame: int = FRAME, timesteps: int = TIMESTEPS, seed: int = 0,
                  limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: videos ``(N, T, 1, frame, frame)`` float32 and
    labels int64. ``limit`` keeps the first ``limit`` videos of each split (for tests)."""
    x_train, x_test, y_train, y_test = digits_split()
    if limit is not None:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    rng = np.random.default_rng(seed)
    return (_videos(x_train, rng, frame, timesteps), y_train, _videos(x_test, rng, frame, timesteps), y_test)
