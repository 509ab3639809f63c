"""The 8x8 handwritten digits that scikit-learn ships, as images for convolutional networks.

scikit-learn is an optional dependency (``pip install scikit-learn``): its
``load_digits`` data (1797 grey-scale images of the digits 0-9, UCI's "Optical
Recognition of Handwritten Digits", 16 grey levels) are read from the files it
installs, with no download.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["ImageDataset", "digits"]


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """Images for classification split into training and validation parts.

    Attributes
    ----------
    x_train, x_val : numpy.ndarray
        Images of shape ``(n, channels, height, width)``.
    y_train, y_val : numpy.ndarray
        int64 class indices in ``0 .. classes - 1``, shape ``(n,)``.
    classes : int
    name : str
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(channels, height, width)`` of one image."""
        return tuple(int(d) for d in np.shape(self.x_train)[1:])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, classes={self.classes}, image_shape={self.image_shape}, "
            f"n_train={len(self.x_train)}, n_val={len(self.x_val)})"
        )


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "pyxbraid.datasets.digits() reads the 8x8 digits bundled with scikit-learn, which is not installed: "
            "pip install scikit-learn",
            name="sklearn",  # what is missing, for code that checks ImportError.name
        ) from exc
    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target)


def digits(val_fraction: float = 0.2, *, seed: int = 0, dtype: type = np.float64) -> ImageDataset:
    """Load the 1797 8x8 handwritten digits of scikit-learn with a seeded, stratified train/validation split.

    Pixels (16 grey levels, 0..16) are scaled to ``[0, 1]``. Each class is split
    on its own (a seeded permutation of its images, ``round(val_fraction * n_c)``
    to validation), so both parts hold every digit in its proportion; the
    parts are then shuffled with the same generator.

    Parameters
    ----------
    val_fraction : float, default 0.2
        Share of each class held out for validation, in ``(0, 1)``.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``; the same seed gives the same split.
    dtype : numpy dtype, default float64
        dtype of the images.

    Returns
    -------
    ImageDataset
        ``x_*`` of shape ``(n, 1, 8, 8)``, ``y_*`` int64 in ``0 .. 9``.

    Raises
    ------
    ImportError
        scikit-learn is not installed (the message says how to install it).

    Examples
    --------
    >>> from pyxbraid.datasets import digits
    >>> data = digits()
    >>> data
    ImageDataset(name='digits', classes=10, image_shape=(1, 8, 8), n_train=1438, n_val=359)
    >>> float(data.x_train.max()), data.x_train.dtype.name
    (1.0, 'float64')
    >>> import numpy as np
    >>> np.bincount(data.y_val).tolist()
    [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    """
    if isinstance(val_fraction, (bool, np.bool_)) or not isinstance(val_fraction, numbers.Real):
        raise TypeError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    images, target = _load_sklearn_digits()
    x = (images.astype(np.float64) / 16.0).astype(dtype)[:, None, :, :]
    y = target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(float(val_fraction) * members.size))
        val_idx.append(members[:n_val])
        train_idx.append(members[n_val:])
    tr = rng.permutation(np.concatenate(train_idx))
    va = rng.permutation(np.concatenate(val_idx))
    return ImageDataset(
        x_train=np.ascontiguousarray(x[tr]),
        y_train=y[tr],
        x_val=np.ascontiguousarray(x[va]),
        y_val=y[va],
        classes=10,
        name="digits",
    )
