"""Image reading as Caffe's OpenCV reads (BGR, grey, resize), list files, and convert_imageset."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from pycaffe_lite.data.datum import datum_to_array
from pycaffe_lite.data.images import (
    convert_imageset,
    encode_image,
    read_image,
    read_image_list,
    resize_linear,
)
from pycaffe_lite.data.lmdb_source import LMDBSource
from pycaffe_lite.errors import DataError
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.rng import set_random_seed


@pytest.fixture
def caplog(caplog):
    """caplog that also sees the pycaffe_lite logger once the CLI has stopped its propagation."""
    logger = logging.getLogger("pycaffe_lite")
    attach = not logger.propagate  # else caplog's root handler sees the records already
    if attach:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    yield caplog
    if attach:
        logger.removeHandler(caplog.handler)


def rgb_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def imageset(tmp_path):
    """Four tiny PNGs (two colour 6x5, one grey 6x5, one colour 8x10) and a list file."""
    root = tmp_path / "images"
    (root / "sub dir").mkdir(parents=True)
    arrays = {"a.png": rgb_image(6, 5, 0), "sub dir/b c.png": rgb_image(6, 5, 1)}
    for name, arr in arrays.items():
        Image.fromarray(arr, "RGB").save(root / name)
    grey = np.arange(30, dtype=np.uint8).reshape(6, 5) * 8
    Image.fromarray(grey, "L").save(root / "g.png")
    arrays["g.png"] = grey
    big = rgb_image(8, 10, 2)
    Image.fromarray(big, "RGB").save(root / "big.png")
    arrays["big.png"] = big
    listfile = tmp_path / "list.txt"
    listfile.write_text("a.png 3\nsub dir/b c.png 1\n\ng.png 7\n")
    return root, listfile, arrays


def test_colour_is_bgr_chw(imageset):
    root, _, arrays = imageset
    chw = read_image(root / "a.png")
    assert chw.dtype == np.uint8 and chw.shape == (3, 6, 5)
    np.testing.assert_array_equal(chw, arrays["a.png"][:, :, ::-1].transpose(2, 0, 1))


def test_grey_file_read_in_colour_repeats_the_channel(imageset):
    root, _, arrays = imageset
    chw = read_image(root / "g.png", is_color=True)
    assert chw.shape == (3, 6, 5)
    for c in range(3):
        np.testing.assert_array_equal(chw[c], arrays["g.png"])
    np.testing.assert_array_equal(read_image(root / "g.png", is_color=False)[0], arrays["g.png"])


def test_colour_file_read_in_grey_uses_opencvs_weights(imageset):
    root, _, arrays = imageset
    rgb = arrays["a.png"].astype(np.int64)
    expected = (rgb[..., 2] * 1868 + rgb[..., 1] * 9617 + rgb[..., 0] * 4899 + 8192) >> 14
    np.testing.assert_array_equal(read_image(root / "a.png", is_color=False)[0], expected)


def test_resize_identity_halving_and_constant():
    img = rgb_image(8, 6, 3)
    np.testing.assert_array_equal(resize_linear(img, 8, 6), img)
    s = img.astype(np.int64)
    mean = (s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2] + 2) >> 2
    np.testing.assert_array_equal(resize_linear(img, 4, 3), mean)
    flat = np.full((5, 7), 77, np.uint8)
    np.testing.assert_array_equal(resize_linear(flat, 9, 4), np.full((9, 4), 77))


def test_resize_upsampling_interpolates_between_neighbours():
    row = np.array([[0, 100]], np.uint8)
    out = resize_linear(row, 1, 4)  # centres at -0.25, 0.25, 0.75, 1.25 -> clamped, 25, 75, clamped
    np.testing.assert_array_equal(out, [[0, 25, 75, 100]])


def test_read_image_resizes(imageset):
    root, _, _ = imageset
    assert read_image(root / "big.png", 3, 4).shape == (3, 3, 4)


def test_bad_image_and_missing_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x.png: cannot decode the image"):
        read_image(tmp_path / "x.png")
    with pytest.raises(DataError, match=r"y.png: no such image file"):
        read_image(tmp_path / "y.png")


def test_list_file_parsing_and_errors(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("dir/with space.jpg 4\r\nb.png\t2\n")
    assert read_image_list(f) == [("dir/with space.jpg", 4), ("b.png", 2)]
    f.write_text("a.png 1\nb.png x\n")
    with pytest.raises(DataError, match=r"l.txt:2: expected 'relative/path label'.*'b.png x'"):
        read_image_list(f)
    f.write_text("\n\n")
    with pytest.raises(DataError, match="the image list is empty"):
        read_image_list(f)
    with pytest.raises(DataError, match="no such image list file"):
        read_image_list(tmp_path / "none.txt")


def _records(db):
    with LMDBSource(str(db), cache_limit_bytes=0) as src:
        out = []
        for key, value in src._txn.cursor():
            d = caffe_pb2.Datum()
            d.ParseFromString(value)
            out.append((key.decode(), d))
        return out


def test_convert_imageset_raw(imageset, tmp_path):
    root, listfile, arrays = imageset
    n = convert_imageset(root, listfile, tmp_path / "db")
    assert n == 3
    recs = _records(tmp_path / "db")
    assert [k for k, _ in recs] == ["00000000_a.png", "00000001_sub dir/b c.png", "00000002_g.png"]
    assert [d.label for _, d in recs] == [3, 1, 7]
    arr, _ = datum_to_array(recs[0][1])
    np.testing.assert_array_equal(arr, arrays["a.png"][:, :, ::-1].transpose(2, 0, 1))
    assert (recs[2][1].channels, recs[2][1].height, recs[2][1].width) == (3, 6, 5)


def test_convert_imageset_gray_resize_shuffle(imageset, tmp_path):
    root, listfile, _ = imageset
    set_random_seed(5)
    convert_imageset(root, listfile, tmp_path / "db", resize_height=4, resize_width=3, gray=True, shuffle=True)
    recs = _records(tmp_path / "db")
    assert sorted(d.label for _, d in recs) == [1, 3, 7]
    assert all((d.channels, d.height, d.width) == (1, 4, 3) for _, d in recs)
    assert [k[:9] for k, _ in recs] == ["00000000_", "00000001_", "00000002_"]


def test_convert_imageset_encoded(imageset, tmp_path):
    root, listfile, arrays = imageset
    convert_imageset(root, listfile, tmp_path / "raw", encoded=True)
    recs = _records(tmp_path / "raw")
    assert all(d.encoded for _, d in recs)
    assert recs[0][1].data == (root / "a.png").read_bytes()  # the file itself, as Caffe stores it
    convert_imageset(root, listfile, tmp_path / "jpg", encoded=True, encode_type="jpg", resize_height=6,
                     resize_width=5)
    recs = _records(tmp_path / "jpg")
    assert recs[0][1].data[:2] == b"\xff\xd8"  # JPEG
    arr, _ = datum_to_array(recs[0][1])
    expected = arrays["a.png"][:, :, ::-1].transpose(2, 0, 1).astype(int)
    assert arr.shape == (3, 6, 5) and np.abs(arr.astype(int) - expected).mean() < 40  # lossy


def test_encode_png_round_trip():
    chw = rgb_image(4, 3, 9).transpose(2, 0, 1)
    d = caffe_pb2.Datum(data=encode_image(chw, "png"), encoded=True)
    np.testing.assert_array_equal(datum_to_array(d)[0], chw)
    with pytest.raises(DataError, match="unknown encode type 'gif'"):
        encode_image(chw, "gif")


def test_convert_imageset_skips_unreadable_and_fails_when_none(imageset, tmp_path, caplog):
    root, _, _ = imageset
    lst = tmp_path / "l2.txt"
    lst.write_text("a.png 0\nmissing.png 1\n")
    assert convert_imageset(root, lst, tmp_path / "db") == 1
    assert "missing.png" in caplog.text
    lst.write_text("missing.png 1\n")
    with pytest.raises(DataError, match="none of the 1 listed images could be read"):
        convert_imageset(root, lst, tmp_path / "db2")


def test_convert_imageset_check_size(imageset, tmp_path):
    root, _, _ = imageset
    lst = tmp_path / "l3.txt"
    lst.write_text("a.png 0\nbig.png 1\n")
    with pytest.raises(DataError, match=r"big.png: image shape \(3, 8, 10\) differs"):
        convert_imageset(root, lst, tmp_path / "db", check_size=True)
