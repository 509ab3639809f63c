"""pyxbraid.datasets: the shipped peaks data and its generator."""

from __future__ import annotations

import dataclasses
import doctest
import math

import numpy as np
import pytest

from pyxbraid import datasets

REFERENCE_AXIS = np.linspace(-3.0, 3.0, 256)


def _on_reference_grid(points: np.ndarray) -> bool:
    # The reference files print coordinates with 15 significant digits, so they
    # match the grid only to rounding.
    nearest = REFERENCE_AXIS[np.rint((points + 3.0) / 6.0 * 255).astype(int)]
    return bool(np.abs(points - nearest).max() < 1e-13)


def test_docstring_examples():
    failures, tried = doctest.testmod(datasets, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_public_names():
    assert datasets.__all__ == [
        "Dataset", "ImageDataset", "digits", "make_peaks", "peaks", "peaks_function", "peaks_labels"
    ]


def test_peaks_shapes_and_dtypes():
    data = datasets.peaks()
    assert data.x_train.shape == (5000, 2) and data.x_train.dtype == np.float64
    assert data.y_train.shape == (5000,) and data.y_train.dtype == np.int64
    assert data.x_val.shape == (200, 2) and data.x_val.dtype == np.float64
    assert data.y_val.shape == (200,) and data.y_val.dtype == np.int64
    assert data.classes == 5 and data.in_features == 2 and data.name == "peaks"
    assert repr(data) == "Dataset(name='peaks', classes=5, in_features=2, n_train=5000, n_val=200)"


def test_peaks_is_sorted_by_class_with_equal_counts():
    data = datasets.peaks()
    assert np.array_equal(data.y_train, np.repeat(np.arange(5), 1000))
    assert np.array_equal(data.y_val, np.repeat(np.arange(5), 40))


def test_peaks_points_are_the_published_values_on_the_grid():
    data = datasets.peaks()
    for points in (data.x_train, data.x_val):
        assert points.min() >= -3.0 and points.max() <= 3.0
        assert _on_reference_grid(points)
    # First and last rows of features_training.dat / features_validation.dat, parsed exactly.
    assert data.x_train[0].tolist() == [5.76470588235294e-01, -1.89411764705882e00]
    assert data.x_train[-1].tolist() == [-2.23529411764706e-01, 1.42352941176471e00]
    assert data.x_val[-1].tolist() == [3.41176470588235e-01, 1.30588235294118e00]
    assert len(np.unique(data.x_train, axis=0)) == 4361


def test_peaks_validation_overlaps_training():
    # A property of the published data, documented in peaks(): worth knowing
    # before reading validation accuracy as generalisation.
    data = datasets.peaks()
    assert np.array_equal(data.x_val[:40], data.x_train[:40])
    train_rows = {tuple(row) for row in data.x_train.tolist()}
    assert sum(tuple(row) in train_rows for row in data.x_val.tolist()) == 72


def test_peaks_labels_reproduce_every_shipped_label():
    data = datasets.peaks()
    assert int((datasets.peaks_labels(data.x_train) == data.y_train).sum()) == 5000
    assert int((datasets.peaks_labels(data.x_val) == data.y_val).sum()) == 200


def test_peaks_labels_bands_come_from_the_256_grid_extremes():
    heights = datasets.peaks_function(REFERENCE_AXIS[:, None], REFERENCE_AXIS[None, :])
    assert heights.min() == pytest.approx(-6.549719226231, abs=1e-11)
    assert heights.max() == pytest.approx(8.105393446796, abs=1e-11)
    lowest = np.unravel_index(heights.argmin(), heights.shape)
    highest = np.unravel_index(heights.argmax(), heights.shape)
    corners = REFERENCE_AXIS[[lowest, highest]]
    # The grid maximum is the top edge of the last band and must stay in it.
    assert datasets.peaks_labels(corners).tolist() == [0, 4]


def test_peaks_labels_accepts_integers_and_empty_input():
    assert datasets.peaks_labels(np.array([[0, 0], [3, 3]])).tolist() == [2, 2]
    empty = datasets.peaks_labels(np.empty((0, 2)))
    assert empty.shape == (0,) and empty.dtype == np.int64


def test_peaks_function_known_values():
    # Only the first and last terms survive at the origin: (3 - 1/3) e^-1.
    assert float(datasets.peaks_function(0.0, 0.0)) == pytest.approx(8.0 / (3.0 * math.e), abs=1e-12)
    # At (1, -1) the first term vanishes: -10 (1/5 - 1 + 1) e^-2 - e^-5 / 3.
    expected = -2.0 * math.exp(-2.0) - math.exp(-5.0) / 3.0
    assert float(datasets.peaks_function(1.0, -1.0)) == pytest.approx(expected, abs=1e-12)
    # At (-1, 0) every term contributes: 12 e^-2 - 10 (-1/5 + 1) e^-1 - 1/3.
    expected = 12.0 * math.exp(-2.0) - 8.0 * math.exp(-1.0) - 1.0 / 3.0
    assert float(datasets.peaks_function(-1.0, 0.0)) == pytest.approx(expected, abs=1e-12)


def test_peaks_function_broadcasts():
    x = np.array([[0.0], [1.0], [-1.0]])
    y = np.array([0.0, -1.0, 2.0, 0.5])
    z = datasets.peaks_function(x, y)
    assert z.shape == (3, 4) and z.dtype == np.float64
    assert z[1, 1] == datasets.peaks_function(1.0, -1.0)
    assert np.shape(datasets.peaks_function(0.5, 0.5)) == ()


def test_peaks_returns_fresh_arrays():
    first = datasets.peaks()
    first.x_train[:] = 99.0
    first.y_train[:] = -1
    first.x_val[0, 0] = 99.0
    first.y_val[0] = 7
    second = datasets.peaks()
    assert second.x_train.min() >= -3.0 and second.x_val[0, 0] != 99.0
    assert second.y_train[0] == 0 and second.y_val[0] == 0


def test_dataset_is_frozen_and_checks_shapes():
    data = datasets.peaks()
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.classes = 3  # type: ignore[misc]
    with pytest.raises(
        ValueError, match=r"x_val must be 2-D and y_val 1-D of the same length, got shapes \(3, 2\) and \(2,\)"
    ):
        datasets.Dataset(np.zeros((2, 2)), np.zeros(2, int), np.zeros((3, 2)), np.zeros(2, int), 2, "bad")
    with pytest.raises(ValueError, match="same number of features, got 2 and 3"):
        datasets.Dataset(np.zeros((2, 2)), np.zeros(2, int), np.zeros((2, 3)), np.zeros(2, int), 2, "bad")


def test_make_peaks_sizes_dtypes_and_grid():
    data = datasets.make_peaks(300, 70, seed=5)
    assert data.x_train.shape == (300, 2) and data.x_train.dtype == np.float64
    assert data.y_train.shape == (300,) and data.y_train.dtype == np.int64
    assert data.x_val.shape == (70, 2) and data.y_val.shape == (70,)
    assert data.classes == 5 and data.in_features == 2
    assert data.name == "make_peaks(seed=5, grid=256)"
    assert _on_reference_grid(data.x_train) and _on_reference_grid(data.x_val)
    assert np.array_equal(data.y_train, datasets.peaks_labels(data.x_train))
    assert np.array_equal(data.y_val, datasets.peaks_labels(data.x_val))
    default = datasets.make_peaks()
    assert default.x_train.shape == (5000, 2) and default.x_val.shape == (200, 2)


def test_make_peaks_coarse_and_continuous_sampling():
    coarse = datasets.make_peaks(500, 10, seed=2, grid=3)
    assert set(np.unique(coarse.x_train).tolist()) == {-3.0, 0.0, 3.0}
    continuous = datasets.make_peaks(500, 10, seed=2, grid=None)
    assert continuous.x_train.min() >= -3.0 and continuous.x_train.max() <= 3.0
    assert len(np.unique(continuous.x_train)) == 1000
    assert continuous.name == "make_peaks(seed=2, grid=None)"


def test_make_peaks_is_reproducible_per_seed():
    first = datasets.make_peaks(400, 50, seed=11)
    again = datasets.make_peaks(400, 50, seed=11)
    other = datasets.make_peaks(400, 50, seed=12)
    for field in ("x_train", "y_train", "x_val", "y_val"):
        assert np.array_equal(getattr(first, field), getattr(again, field))
    assert not np.array_equal(first.x_train, other.x_train)
    assert not np.array_equal(first.x_val, other.x_val)
    # Validation points are drawn after the training points, so n_val leaves them alone.
    assert np.array_equal(datasets.make_peaks(400, 1, seed=11).x_train, first.x_train)
    unseeded = datasets.make_peaks(20, 5, seed=None)
    assert unseeded.x_train.shape == (20, 2) and unseeded.name == "make_peaks(seed=None, grid=256)"


def test_make_peaks_covers_all_classes_unsorted():
    data = datasets.make_peaks(2000, 200, seed=0)
    assert data.y_train.min() >= 0 and data.y_train.max() <= 4
    assert np.all(np.bincount(data.y_train, minlength=5) > 0)
    assert np.any(np.diff(data.y_train) < 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_train": 0}, ValueError, "n_train must be a positive integer, got 0"),
        ({"n_train": -5}, ValueError, "n_train must be a positive integer, got -5"),
        ({"n_train": 10.0}, TypeError, r"n_train must be a positive integer, got 10\.0"),
        ({"n_train": True}, TypeError, "n_train must be a positive integer, got True"),
        ({"n_train": "100"}, TypeError, "n_train must be a positive integer, got '100'"),
        ({"n_val": 0}, ValueError, "n_val must be a positive integer, got 0"),
        ({"n_val": False}, TypeError, "n_val must be a positive integer, got False"),
        ({"n_val": np.bool_(True)}, TypeError, "n_val must be a positive integer, got np.True_"),
        ({"grid": 1}, ValueError, r"grid must be an integer >= 2 or None, got 1"),
        ({"grid": 0}, ValueError, r"grid must be an integer >= 2 or None, got 0"),
        ({"grid": 256.0}, TypeError, r"grid must be an integer >= 2 or None, got 256\.0"),
        ({"grid": True}, TypeError, r"grid must be an integer >= 2 or None, got True"),
        ({"seed": -1}, ValueError, "seed must be a non-negative integer or None, got -1"),
        ({"seed": 1.5}, TypeError, r"seed must be a non-negative integer or None, got 1\.5"),
        ({"seed": True}, TypeError, "seed must be a non-negative integer or None, got True"),
    ],
)
def test_make_peaks_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        datasets.make_peaks(**kwargs)


def test_make_peaks_accepts_numpy_integers():
    data = datasets.make_peaks(np.int64(30), np.int32(4), seed=np.uint8(3), grid=np.int16(17))
    assert data.x_train.shape == (30, 2) and data.x_val.shape == (4, 2)


@pytest.mark.parametrize(
    ("points", "error", "message"),
    [
        (np.zeros(3), ValueError, r"points must have shape \(n, 2\), got \(3,\)"),
        (np.zeros((4, 3)), ValueError, r"points must have shape \(n, 2\), got \(4, 3\)"),
        (np.zeros((2, 2, 2)), ValueError, r"points must have shape \(n, 2\), got \(2, 2, 2\)"),
        ([[0.0, 0.0], [1.0, np.nan]], ValueError, r"points must be finite, got \[1\.0, nan\] in row 1"),
        ([[np.inf, 0.0]], ValueError, r"points must be finite, got \[inf, 0\.0\] in row 0"),
        ([["a", "b"]], TypeError, "points must be a real numeric array, got dtype <U1"),
        ([[1j, 0.0]], TypeError, "points must be a real numeric array, got dtype complex128"),
        ([[True, False]], TypeError, "points must be a real numeric array, got dtype bool"),
    ],
)
def test_peaks_labels_rejects_bad_points(points, error, message):
    with pytest.raises(error, match=message):
        datasets.peaks_labels(points)
