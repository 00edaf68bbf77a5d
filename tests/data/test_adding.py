"""The adding-problem generator (pycaffe_lite/data/adding.py) and `plite data adding`'s LMDBs."""
from __future__ import annotations

import numpy as np
import pytest

from pycaffe_lite.data.adding import make_adding, prepare_adding
from pycaffe_lite.data.lmdb_source import LMDBSource
from pycaffe_lite.errors import DataError


@pytest.mark.parametrize("T", [2, 3, 10, 51])
def test_two_markers_one_per_half_and_target_is_their_sum(T):
    x, y = make_adding(T, 200, np.random.default_rng(5))
    assert x.shape == (200, T, 2) and x.dtype == np.float32 and y.shape == (200,) and y.dtype == np.float32
    numbers, markers = x[:, :, 0], x[:, :, 1]
    assert np.all((numbers >= 0) & (numbers <= 1))
    assert set(np.unique(markers)) <= {0.0, 1.0}
    half = T // 2
    np.testing.assert_array_equal(markers[:, :half].sum(axis=1), 1)
    np.testing.assert_array_equal(markers[:, half:].sum(axis=1), 1)
    np.testing.assert_allclose(y, (numbers * markers).sum(axis=1), rtol=1e-6)
    if T >= 10:  # the markers move around: both halves' positions vary
        assert len(set(np.argmax(markers[:, :half], axis=1))) > 1
        assert len(set(np.argmax(markers[:, half:], axis=1))) > 1


def test_the_seed_makes_the_data():
    a = make_adding(20, 50, np.random.default_rng(3))
    b = make_adding(20, 50, np.random.default_rng(3))
    c = make_adding(20, 50, np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_predicting_one_scores_about_a_sixth():
    _, y = make_adding(30, 20000, np.random.default_rng(0))
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.01


def test_lmdbs_hold_matching_sequences_and_targets(tmp_path):
    paths = prepare_adding(tmp_path / "a", T=7, n_train=30, n_test=10, seed=2)
    assert [p.split("/")[-1] for p in paths] == ["train_x_lmdb", "train_y_lmdb", "test_x_lmdb", "test_y_lmdb"]
    again = prepare_adding(tmp_path / "b", T=7, n_train=30, n_test=10, seed=2)
    for stem, n in (("train", 30), ("test", 10)):
        xs, ys = LMDBSource(str(tmp_path / "a" / f"{stem}_x_lmdb")), LMDBSource(str(tmp_path / "a" / f"{stem}_y_lmdb"))
        assert xs.record_shape == (7, 1, 2) and ys.record_shape == (1, 1, 1)
        x, _ = xs.cursor().next_batch(n)
        y, _ = ys.cursor().next_batch(n)
        assert x.dtype == np.float32
        np.testing.assert_allclose(y.ravel(), (x[:, :, 0, 0] * x[:, :, 0, 1]).sum(axis=1), rtol=1e-6)
        x2, _ = LMDBSource(str(tmp_path / "b" / f"{stem}_x_lmdb")).cursor().next_batch(n)
        np.testing.assert_array_equal(x, x2)
    assert len(again) == 4


@pytest.mark.parametrize("call, message", [
    (lambda: make_adding(1, 5, np.random.default_rng()), r"needs T >= 2 steps .* got T = 1"),
    (lambda: make_adding(5, -1, np.random.default_rng()), r"number of sequences must be >= 0, got -1"),
    (lambda: prepare_adding("unused", 5, 0, 10), r"--n-train and --n-test must be at least 1, got 0 and 10"),
])
def test_bad_arguments(call, message):
    with pytest.raises(DataError, match=message):
        call()
