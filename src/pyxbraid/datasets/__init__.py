"""Small classification data sets for examples and benchmarks.

The "peaks" problem classifies points of the square [-3, 3]^2 by the height of
MATLAB's ``peaks`` surface: 5 classes, one per equal-width band of heights. It is
the benchmark of Günther et al., "Layer-parallel training of deep residual neural
networks" (SIMODS 2020). :func:`peaks` returns their published data;
:func:`make_peaks` draws fresh samples of any size with the same labelling rule.

Examples
--------
>>> from pyxbraid import datasets
>>> data = datasets.peaks()
>>> data
Dataset(name='peaks', classes=5, in_features=2, n_train=5000, n_val=200)
>>> datasets.make_peaks(100, 20, seed=1).y_train.shape
(100,)
"""

from __future__ import annotations

import functools
import importlib.resources
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # importlib.resources.abc is new in Python 3.11
    from importlib.resources.abc import Traversable

__all__ = ["Dataset", "ImageDataset", "digits", "make_peaks", "peaks", "peaks_function", "peaks_labels"]

_PEAKS_CLASSES = 5
_PEAKS_DOMAIN = (-3.0, 3.0)
# The reference labels were computed with band edges from the extremes of peaks
# sampled on this grid (the grid its points lie on), not from the true extremes:
# the continuous extremes put 3 of the 5200 reference points in the wrong band.
_REFERENCE_GRID = 256


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A classification data set split into training and validation parts.

    ``eq=False``: element-wise array comparison has no single truth value, so
    two data sets compare by identity.

    Parameters
    ----------
    x_train : numpy.ndarray
        Training inputs, shape ``(n_train, in_features)``, float64.
    y_train : numpy.ndarray
        Training class indices in ``0 .. classes - 1``, shape ``(n_train,)``, int64.
    x_val : numpy.ndarray
        Validation inputs, shape ``(n_val, in_features)``, float64.
    y_val : numpy.ndarray
        Validation class indices, shape ``(n_val,)``, int64.
    classes : int
        Number of classes.
    name : str
        Where the data came from.

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid.datasets import Dataset
    >>> d = Dataset(np.zeros((4, 3)), np.array([0, 1, 0, 1]), np.zeros((2, 3)),
    ...             np.array([1, 0]), classes=2, name="toy")
    >>> d.in_features, len(d.x_val)
    (3, 2)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: int
    name: str

    def __post_init__(self) -> None:
        for split in ("train", "val"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if np.ndim(x) != 2 or np.ndim(y) != 1 or len(x) != len(y):
                raise ValueError(
                    f"x_{split} must be 2-D and y_{split} 1-D of the same length, "
                    f"got shapes {np.shape(x)} and {np.shape(y)}"
                )
        if np.shape(self.x_train)[1] != np.shape(self.x_val)[1]:
            raise ValueError(
                "x_train and x_val must have the same number of features, "
                f"got {np.shape(self.x_train)[1]} and {np.shape(self.x_val)[1]}"
            )

    @property
    def in_features(self) -> int:
        """Number of input features per point (2 for peaks)."""
        return int(np.shape(self.x_train)[1])

    def __repr__(self) -> str:
        # The generated repr would print every array; the sizes are what a reader needs.
        return (
            f"Dataset(name={self.name!r}, classes={self.classes}, in_features={self.in_features}, "
            f"n_train={len(self.x_train)}, n_val={len(self.x_val)})"
        )


def peaks_function(x: Any, y: Any) -> np.ndarray:
    """MATLAB's ``peaks`` surface, element-wise with broadcasting.

    ``3 (1-x)^2 exp(-x^2 - (y+1)^2) - 10 (x/5 - x^3 - y^5) exp(-x^2 - y^2)
    - exp(-(x+1)^2 - y^2) / 3``

    Parameters
    ----------
    x, y : array_like
        Coordinates; broadcast against each other.

    Returns
    -------
    numpy.ndarray
        float64 heights with the broadcast shape (0-d for scalar inputs).

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid.datasets import peaks_function
    >>> round(float(peaks_function(0.0, 0.0)), 12)  # (3 - 1/3) / e
    0.981011843124
    >>> peaks_function(np.array([0.0, 1.0]), np.array([0.0, -1.0])).round(6)
    array([ 0.981012, -0.272917])
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (
        3.0 * (1.0 - x) ** 2 * np.exp(-(x**2) - (y + 1.0) ** 2)
        - 10.0 * (x / 5.0 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1.0) ** 2) - y**2) / 3.0
    )


@functools.cache
def _band_range() -> tuple[float, float]:
    axis = np.linspace(*_PEAKS_DOMAIN, _REFERENCE_GRID)
    heights = peaks_function(axis[:, None], axis[None, :])
    return float(heights.min()), float(heights.max())


def peaks_labels(points: Any) -> np.ndarray:
    """Class of each point: its band of ``peaks_function`` heights.

    The range between the minimum and maximum of ``peaks_function`` on the
    256 x 256 grid ``linspace(-3, 3, 256)`` per axis (about [-6.5497, 8.1054])
    is cut into 5 equal-width bands, numbered 0 (lowest) to 4. A height on a band
    edge belongs to the upper band; heights beyond the range (the grid maximum
    itself, or points off the grid) go to the nearest end band. This rule
    reproduces all 5200 labels of :func:`peaks`.

    Parameters
    ----------
    points : array_like
        Real, finite coordinates, shape ``(n, 2)``: one ``(x, y)`` per row.

    Returns
    -------
    numpy.ndarray
        int64 class indices in ``0 .. 4``, shape ``(n,)``.

    Raises
    ------
    TypeError
        If ``points`` is not a real numeric array.
    ValueError
        If ``points`` does not have shape ``(n, 2)`` or holds NaN or infinity.

    Examples
    --------
    >>> from pyxbraid.datasets import peaks_labels
    >>> peaks_labels([[0.25, -1.6], [-1.0, 0.0], [0.0, 0.0], [1.5, 0.5], [0.0, 1.6]])
    array([0, 1, 2, 3, 4])
    """
    coords = np.asarray(points)
    if coords.dtype.kind not in "iuf":
        raise TypeError(f"points must be a real numeric array, got dtype {coords.dtype}")
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {coords.shape}")
    coords = coords.astype(np.float64, copy=False)
    if not np.all(np.isfinite(coords)):
        bad = int(np.argmin(np.isfinite(coords).all(axis=1)))
        raise ValueError(f"points must be finite, got {coords[bad].tolist()} in row {bad}")
    low, high = _band_range()
    band_width = (high - low) / _PEAKS_CLASSES
    heights = peaks_function(coords[:, 0], coords[:, 1])
    bands = np.floor((heights - low) / band_width)
    return np.clip(bands, 0, _PEAKS_CLASSES - 1).astype(np.int64)


def _data_dir() -> Traversable:
    # importlib.resources rather than __file__: it also reads zipped installs.
    return importlib.resources.files(__name__) / "data"


@functools.cache
def _reference_peaks() -> dict[str, np.ndarray]:
    with (_data_dir() / "peaks.npz").open("rb") as stream, np.load(stream) as archive:
        arrays = {key: archive[key] for key in ("x_train", "y_train", "x_val", "y_val")}
    for array in arrays.values():
        # The cache is shared by every caller; only copies leave this module.
        array.setflags(write=False)
    return arrays


def peaks() -> Dataset:
    """The published peaks data set: 5000 training and 200 validation points.

    The reference data of Günther et al. (2020), LayerParallelLearning
    ``examples/peaks``. Points lie on the grid ``linspace(-3, 3, 256)`` per axis;
    labels follow :func:`peaks_labels`.

    Both parts are **sorted by class** (1000 training and 40 validation points
    per class, class 0 first): shuffle before taking mini-batches. The parts
    overlap: 72 validation points also occur in the training set.

    Returns
    -------
    Dataset
        Fresh arrays on every call (float64 points, int64 labels), so modifying
        them does not affect later calls.

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid.datasets import peaks
    >>> data = peaks()
    >>> data.x_train.shape, data.x_val.shape, data.classes, data.in_features
    ((5000, 2), (200, 2), 5, 2)
    >>> np.bincount(data.y_val).tolist()
    [40, 40, 40, 40, 40]
    """
    reference = _reference_peaks()
    return Dataset(
        x_train=reference["x_train"].copy(),
        y_train=reference["y_train"].copy(),
        x_val=reference["x_val"].copy(),
        y_val=reference["y_val"].copy(),
        classes=_PEAKS_CLASSES,
        name="peaks",
    )


def _is_integer(value: Any) -> bool:
    # bool is an Integral subclass, but True as a sample count is a bug, not a 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _positive_count(name: str, value: Any) -> int:
    if not _is_integer(value):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def make_peaks(
    n_train: int = 5000,
    n_val: int = 200,
    *,
    seed: int | None = 0,
    grid: int | None = 256,
) -> Dataset:
    """Draw a new peaks data set of any size.

    Points are drawn uniformly, independently and with replacement, training
    points first, then validation points, from one ``numpy.random.default_rng(seed)``
    stream (so ``n_val`` does not change the training points). Labels follow
    :func:`peaks_labels`. Unlike :func:`peaks`, the result is not sorted by class.

    Parameters
    ----------
    n_train, n_val : int, default 5000, 200
        Number of training and validation points (positive).
    seed : int or None, default 0
        Seed of the random generator; the same seed gives identical arrays.
        None draws fresh entropy from the operating system.
    grid : int or None, default 256
        Points per axis of the grid ``linspace(-3, 3, grid)`` the points are
        drawn from (256 is the grid of the reference data); None draws
        continuously from [-3, 3]^2.

    Returns
    -------
    Dataset
        float64 points of shape ``(n, 2)``, int64 labels in ``0 .. 4``.

    Raises
    ------
    TypeError
        If a count, ``seed`` or ``grid`` is not an integer (bool included).
    ValueError
        If a count is below 1, ``seed`` is negative or ``grid`` is below 2.

    Examples
    --------
    >>> from pyxbraid.datasets import make_peaks
    >>> data = make_peaks(1000, 100, seed=3)
    >>> data.x_train.shape, data.y_val.shape
    ((1000, 2), (100,))
    >>> bool((make_peaks(50, 5, seed=3).x_train == data.x_train[:50]).all())
    True
    >>> continuous = make_peaks(10, 10, grid=None).x_train
    >>> bool((abs(continuous) <= 3.0).all())
    True
    """
    n_train = _positive_count("n_train", n_train)
    n_val = _positive_count("n_val", n_val)
    if seed is not None:
        if not _is_integer(seed):
            raise TypeError(f"seed must be a non-negative integer or None, got {seed!r}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    if grid is not None:
        if not _is_integer(grid):
            raise TypeError(f"grid must be an integer >= 2 or None, got {grid!r}")
        if grid < 2:
            raise ValueError(f"grid must be an integer >= 2 or None, got {grid!r}")

    rng = np.random.default_rng(seed)
    low, high = _PEAKS_DOMAIN

    def draw(count: int) -> np.ndarray:
        if grid is None:
            return rng.uniform(low, high, size=(count, 2))
        axis = np.linspace(low, high, grid)
        return axis[rng.integers(0, grid, size=(count, 2))]

    x_train = draw(n_train)
    x_val = draw(n_val)
    return Dataset(
        x_train=x_train,
        y_train=peaks_labels(x_train),
        x_val=x_val,
        y_val=peaks_labels(x_val),
        classes=_PEAKS_CLASSES,
        name=f"make_peaks(seed={seed}, grid={grid})",
    )

from .digits import ImageDataset, digits  # noqa: E402  (pyxbraid.datasets.digits(): scikit-learn's 8x8 digits)
