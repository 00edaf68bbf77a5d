"""DataTransformer: (x - mean) * scale, crop (random in TRAIN, centred in TEST), mirror."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.data.mean import save_mean
from pycaffe_lite.data.transformer import DataTransformer
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.rng import set_random_seed

SHAPE = (3, 7, 6)


def tparam(text: str):
    return text_format.Parse(text, caffe_pb2.TransformationParameter())


def run(text: str, batch: np.ndarray, phase: int = TRAIN) -> np.ndarray:
    t = DataTransformer(tparam(text), phase, batch.shape[1:])
    out = np.full(t.output_shape(len(batch)), np.nan, np.float32)
    assert t.transform(batch, out) is out
    return out


@pytest.fixture
def batch():
    return np.random.default_rng(0).integers(0, 256, (5, *SHAPE), dtype=np.uint8)


@pytest.fixture
def mean_file(tmp_path):
    mean = np.random.default_rng(1).uniform(0, 255, SHAPE).astype(np.float32)
    proto = caffe_pb2.BlobProto(num=1, channels=SHAPE[0], height=SHAPE[1], width=SHAPE[2])
    proto.data.extend(mean.ravel().tolist())
    path = str(tmp_path / "mean.binaryproto")
    save_mean(proto, path)
    return path, mean


def test_identity_and_scale(batch):
    np.testing.assert_array_equal(run("", batch), batch.astype(np.float32))
    out = run("scale: 0.00390625", batch)
    np.testing.assert_array_equal(out, batch.astype(np.float32) * np.float32(0.00390625))


def test_mean_value_one_and_per_channel(batch):
    s = np.float32(0.017)
    out = run("mean_value: 104 scale: 0.017", batch)
    np.testing.assert_array_equal(out, (batch.astype(np.float32) - np.float32(104)) * s)
    out = run("mean_value: 104 mean_value: 117 mean_value: 123.5 scale: 0.017", batch)
    m = np.array([104, 117, 123.5], np.float32).reshape(3, 1, 1)
    np.testing.assert_array_equal(out, (batch.astype(np.float32) - m) * s)


def test_mean_file(batch, mean_file):
    path, mean = mean_file
    out = run(f'mean_file: "{path}" scale: 0.5', batch)
    np.testing.assert_array_equal(out, (batch.astype(np.float32) - mean) * np.float32(0.5))


def test_float_records(batch):
    x = batch.astype(np.float32) / 3
    np.testing.assert_array_equal(run("scale: 2", x), x * np.float32(2))


def test_centre_crop_in_test(batch, mean_file):
    path, mean = mean_file
    out = run(f'crop_size: 4 mean_file: "{path}"', batch, TEST)
    h0, w0 = (7 - 4) // 2, (6 - 4) // 2  # Caffe: (H - crop) / 2, integer division
    assert out.shape == (5, 3, 4, 4)
    np.testing.assert_array_equal(out, batch[:, :, h0:h0 + 4, w0:w0 + 4] - mean[:, h0:h0 + 4, w0:w0 + 4])


def test_random_crop_in_train_stays_inside_and_crops_the_mean(mean_file):
    path, mean = mean_file
    set_random_seed(3)
    batch = np.random.default_rng(2).integers(0, 256, (40, *SHAPE), dtype=np.uint8)
    out = run(f'crop_size: 4 mean_file: "{path}"', batch, TRAIN)
    full = batch.astype(np.float32) - mean
    offsets = set()
    for n in range(len(batch)):
        found = [(h, w) for h in range(7 - 4 + 1) for w in range(6 - 4 + 1)
                 if np.array_equal(out[n], full[n, :, h:h + 4, w:w + 4])]
        assert found, f"item {n} is not a window of its record"
        offsets.update(found)
    assert len(offsets) > 3  # offsets really vary


def test_mirror_flips_some_items_in_both_phases(batch):
    big = np.random.default_rng(4).integers(0, 256, (32, *SHAPE), dtype=np.uint8)
    for phase in (TRAIN, TEST):
        set_random_seed(5)
        out = run("mirror: true", big, phase)
        flipped = [np.array_equal(out[n], big[n, :, :, ::-1]) for n in range(32)]
        plain = [np.array_equal(out[n], big[n]) for n in range(32)]
        assert all(f or p for f, p in zip(flipped, plain))
        assert 0 < sum(flipped) < 32


def test_mirror_after_mean_and_crop(batch, mean_file):
    path, mean = mean_file
    set_random_seed(6)
    out = run(f'mirror: true crop_size: 4 mean_file: "{path}" scale: 2', batch, TEST)
    h0, w0 = 1, 1
    ref = (batch[:, :, h0:h0 + 4, w0:w0 + 4].astype(np.float32) - mean[:, h0:h0 + 4, w0:w0 + 4]) * np.float32(2)
    for n in range(len(batch)):
        assert np.array_equal(out[n], ref[n]) or np.array_equal(out[n], ref[n, :, :, ::-1])


def test_same_seed_same_output(batch):
    outs = []
    for _ in range(2):
        set_random_seed(7)
        outs.append(run("mirror: true crop_size: 3", batch, TRAIN))
    np.testing.assert_array_equal(*outs)


def test_config_errors(batch, mean_file):
    path, _ = mean_file
    with pytest.raises(NetConfigError, match="either mean_file or mean_value"):
        DataTransformer(tparam(f'mean_file: "{path}" mean_value: 1'), TRAIN, SHAPE, "layer 'd' (Data)")
    with pytest.raises(NetConfigError, match="2 mean_value entries for 3-channel"):
        DataTransformer(tparam("mean_value: 1 mean_value: 2"), TRAIN, SHAPE)
    with pytest.raises(NetConfigError, match="crop_size 7 is larger than the 7x6 images"):
        DataTransformer(tparam("crop_size: 7"), TRAIN, SHAPE)
    with pytest.raises(DataError, match=r"shape \(3, 7, 6\) but the records are \(3, 8, 6\)"):
        DataTransformer(tparam(f'mean_file: "{path}"'), TRAIN, (3, 8, 6))
