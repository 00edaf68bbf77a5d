"""pycaffe's caffe.io: Transformer (pycaffe's order of operations, deprocess inverts it),
resize_image, load_image (Pillow optional), and the BlobProto / Datum conversions."""
import sys

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import DataError, ShapeError
from pycaffe_lite.io import (
    Transformer,
    array_to_blobproto,
    array_to_datum,
    blobproto_to_array,
    datum_to_array,
    load_image,
    resize_image,
)
from pycaffe_lite.proto import caffe_pb2

SHAPE = (1, 3, 4, 5)


def image(h=4, w=5, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(h, w, 3)).astype(np.float32)


def full_transformer(mean):
    t = Transformer({"data": SHAPE})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.017)
    return t


@pytest.mark.parametrize("mean", [np.array([104.0, 117.0, 123.0]),
                                  np.random.default_rng(3).uniform(0, 255, size=(3, 4, 5))])
def test_preprocess_in_pycaffes_order_and_deprocess_inverts_it(mean):
    t = full_transformer(mean)
    im = image()
    keep = im.copy()
    x = t.preprocess("data", im)
    m = mean.reshape(3, 1, 1) if mean.ndim == 1 else mean
    expected = ((im.astype(np.float64).transpose(2, 0, 1)[[2, 1, 0]] * 255) - m) * 0.017
    assert x.shape == (3, 4, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(im, keep)  # the caller's image is left alone
    np.testing.assert_allclose(t.deprocess("data", x), im, atol=1e-5)
    np.testing.assert_allclose(t.deprocess("data", x[None]), im, atol=1e-5)  # a batch of one


def test_preprocess_feeds_a_net():
    net = caffe.Net('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 '
                    'dim: 4 dim: 5 } } }', caffe.TEST)
    t = Transformer({"data": net.blobs["data"].data.shape})
    t.set_transpose("data", (2, 0, 1))
    net.blobs["data"].data[...] = t.preprocess("data", image())
    np.testing.assert_allclose(net.forward(blobs=["data"])["data"][0], image().transpose(2, 0, 1))


def test_mean_of_a_single_channel_image_may_be_2d():
    t = Transformer({"gray": (2, 1, 3, 3)})
    t.set_transpose("gray", (2, 0, 1))
    t.set_mean("gray", np.full((3, 3), 0.25))
    x = t.preprocess("gray", np.ones((3, 3, 1), np.float32))
    assert x.shape == (1, 3, 3)
    np.testing.assert_array_equal(x, 0.75)
    np.testing.assert_array_equal(t.deprocess("gray", x), np.ones((3, 3, 1)))


def test_preprocess_resizes_to_the_inputs_size():
    t = Transformer({"data": SHAPE})
    t.set_transpose("data", (2, 0, 1))
    big = image(8, 10)
    x = t.preprocess("data", big)
    assert x.shape == (3, 4, 5)
    np.testing.assert_allclose(x, resize_image(big, (4, 5)).transpose(2, 0, 1))


def test_resize_image_bilinear_and_nearest():
    ramp = np.add.outer(2 * np.arange(2.0), np.arange(2.0))[:, :, None]  # f(r, c) = 2r + c
    up = resize_image(ramp, (4, 4))
    a = np.array([0, 0.25, 0.75, 1.0])  # pixel-centre coordinates, clamped at the borders
    np.testing.assert_allclose(up[:, :, 0], 2 * a[:, None] + a[None, :])
    ramp4 = np.add.outer(2 * np.arange(4.0), np.arange(4.0))[:, :, None]
    b = np.array([0.5, 2.5])
    np.testing.assert_allclose(resize_image(ramp4, (2, 2))[:, :, 0], 2 * b[:, None] + b[None, :])
    near = resize_image(ramp, (4, 4), interp_order=0)
    np.testing.assert_array_equal(near[:, :, 0], ramp[[0, 0, 1, 1]][:, [0, 0, 1, 1], 0])
    assert resize_image(np.full((3, 5, 7), 0.25), (6, 2)).shape == (6, 2, 7)
    np.testing.assert_allclose(resize_image(np.full((3, 5, 7), 0.25), (6, 2)), 0.25)
    with pytest.raises(DataError, match="interp_order 3 is not supported"):
        resize_image(ramp, (3, 3), interp_order=3)
    with pytest.raises(ShapeError, match=r"needs an H x W x K image, got shape \(2, 2\)"):
        resize_image(ramp[:, :, 0], (3, 3))


def test_transformer_errors():
    t = Transformer({"data": SHAPE})
    with pytest.raises(DataError, match="'img' is not one of its inputs \\(data\\)"):
        t.set_raw_scale("img", 255)
    with pytest.raises(ShapeError, match=r"transpose order \(2, 0\) must be a permutation of 3 axes"):
        t.set_transpose("data", (2, 0))
    with pytest.raises(ShapeError, match=r"channel swap \(1, 0\) must be a permutation of the 3 channels"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ShapeError, match=r"the mean has 4 channels but the input \(1, 3, 4, 5\) has 3"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ShapeError, match=r"a mean of shape \(3, 5, 5\) does not fit the input"):
        t.set_mean("data", np.zeros((3, 5, 5)))


# --- load_image --------------------------------------------------------------------------
def test_load_image_without_pillow_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(DataError, match=r"load_image\('.*cat.png'\) needs Pillow, which is not installed: "
                                        r"pip install pillow"):
        load_image(str(tmp_path / "cat.png"))


def test_load_image_color_and_gray(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(0).integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png")
    color = load_image(str(tmp_path / "c.png"))
    assert color.shape == (3, 4, 3) and color.dtype == np.float32
    np.testing.assert_allclose(color, rgb / 255.0, rtol=1e-6)
    gray = load_image(str(tmp_path / "c.png"), color=False)
    np.testing.assert_allclose(gray[:, :, 0], rgb / 255.0 @ [0.2125, 0.7154, 0.0721], rtol=1e-5)
    tiled = load_image(str(tmp_path / "g.png"))
    assert tiled.shape == (3, 4, 3) and np.array_equal(tiled[:, :, 0], tiled[:, :, 2])
    assert load_image(str(tmp_path / "g.png"), color=False).shape == (3, 4, 1)
    with pytest.raises(DataError, match="cannot read"):
        (tmp_path / "bad.png").write_bytes(b"not an image")
        load_image(str(tmp_path / "bad.png"))


# --- arrays <-> protos -------------------------------------------------------------------
def test_blobproto_round_trip_with_diff_and_legacy_shape():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    proto = array_to_blobproto(a, diff=-a)
    assert list(proto.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(blobproto_to_array(proto), a)
    np.testing.assert_array_equal(blobproto_to_array(proto, return_diff=True), -a)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    assert blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    with pytest.raises(DataError, match=r"diff has shape \(3,\) but the data has \(2, 3, 4\)"):
        array_to_blobproto(a, diff=np.zeros(3))
    with pytest.raises(DataError, match=r"BlobProto of shape \(2, 3, 4\) holds 0 diff values, expected 24"):
        blobproto_to_array(array_to_blobproto(a), return_diff=True)


def test_datum_round_trip_reuses_the_data_package():
    u8 = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    datum = array_to_datum(u8, label=7)
    assert datum.label == 7 and datum.data == u8.tobytes() and not datum.float_data
    np.testing.assert_array_equal(datum_to_array(datum), u8)
    floats = array_to_datum(u8.astype(np.float64) / 2)
    assert floats.label == 0 and len(floats.float_data) == 12
    np.testing.assert_allclose(datum_to_array(floats), u8 / 2)
    with pytest.raises(DataError, match=r"needs a C x H x W array, got shape \(2, 2\)"):
        array_to_datum(u8[0])
