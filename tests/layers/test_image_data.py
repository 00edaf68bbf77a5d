"""ImageData: images from a list file, order and wrap, shuffle, resize, transform, errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.layer import TEST
from pycaffe_lite.layers.image_data import ImageDataLayer
from pycaffe_lite.registry import LAYERS
from pycaffe_lite.rng import set_random_seed

from .layer_test_template import forward, layer_param, setup_layer

GRADIENT_CHECKED: set[str] = set()  # a data layer has no gradient


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    arrays = []
    lines = []
    for i in range(5):
        a = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        Image.fromarray(a, "RGB").save(tmp_path / f"im{i}.png")
        arrays.append(a[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))  # BGR CHW
        lines.append(f"im{i}.png {10 + i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, arrays


def layer_text(folder, extra="", transform="", batch_size=3):
    return (f'name: "images" type: "ImageData" transform_param {{ {transform} }} image_data_param {{ '
            f'source: "{folder / "list.txt"}" root_folder: "{folder}" batch_size: {batch_size} {extra} }}')


def test_registered():
    assert LAYERS.get("ImageData") is ImageDataLayer and LAYERS.get("IMAGE_DATA") is ImageDataLayer


def test_order_wraps_and_values(images):
    folder, arrays = images
    layer, bottom, top = setup_layer(layer_text(folder), [], num_top=2)
    assert top[0].shape == (3, 3, 4, 6) and top[1].shape == (3,)
    for k in range(3):
        forward(layer, bottom, top)
        idx = [(3 * k + j) % 5 for j in range(3)]
        np.testing.assert_array_equal(top[0].data, np.stack([arrays[i] for i in idx]))
        np.testing.assert_array_equal(top[1].data, [10 + i for i in idx])


def test_resize_gray_and_transform(images):
    folder, _ = images
    text = layer_text(folder, "new_height: 8 new_width: 12 is_color: false", "scale: 0.5 mean_value: 10")
    layer, bottom, top = setup_layer(text, [], num_top=2)
    forward(layer, bottom, top)
    assert top[0].shape == (3, 1, 8, 12)
    from pycaffe_lite.data.images import read_image

    expected = (read_image(folder / "im0.png", 8, 12, is_color=False).astype(np.float32) - 10) * 0.5
    np.testing.assert_array_equal(top[0].data[0], expected)


def test_crop_in_test_phase(images):
    folder, arrays = images
    lp = layer_param(layer_text(folder, transform="crop_size: 2"))
    lp.phase = TEST
    layer = ImageDataLayer(lp)
    top = [Blob(), Blob()]
    layer.set_up([], top)
    layer.run_forward([], top)
    assert top[0].shape == (3, 3, 2, 2)
    np.testing.assert_array_equal(top[0].data[0], arrays[0][:, 1:3, 2:4])


def test_shuffle_is_a_permutation_per_epoch(images):
    folder, _ = images
    set_random_seed(3)
    layer, bottom, top = setup_layer(layer_text(folder, "shuffle: true", batch_size=5), [], num_top=2)
    forward(layer, bottom, top)
    first = sorted(top[1].data.tolist())
    assert first == [10, 11, 12, 13, 14]


def test_rand_skip(images):
    folder, _ = images
    set_random_seed(1)
    layer, bottom, top = setup_layer(layer_text(folder, "rand_skip: 4"), [], num_top=2)
    start = layer.lines_id
    forward(layer, bottom, top)
    assert top[1].data[0] == 10 + start


def test_mixed_sizes_need_resize(images):
    folder, _ = images
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(folder / "im1.png")
    layer, bottom, top = setup_layer(layer_text(folder), [], num_top=2)
    with pytest.raises(DataError, match=r"layer 'images' \(ImageData\): image 'im1.png' has shape \(3, 5, 5\).*"
                                        r"new_height and new_width"):
        forward(layer, bottom, top)


def test_config_errors(images, tmp_path):
    folder, _ = images
    with pytest.raises(NetConfigError, match="new_height .* and new_width .* must be set together"):
        setup_layer(layer_text(folder, "new_height: 4"), [], num_top=2)
    with pytest.raises(NetConfigError, match="source is empty"):
        setup_layer('type: "ImageData" image_data_param { batch_size: 1 }', [], num_top=2)
    with pytest.raises(NetConfigError, match="batch_size must be a positive"):
        setup_layer(layer_text(folder, batch_size=0), [], num_top=2)
    with pytest.raises(DataError, match=r"layer 'imagedata' \(ImageData\): .*no such image list file"):
        setup_layer(f'type: "ImageData" image_data_param {{ source: "{tmp_path / "none.txt"}" }}', [], num_top=2)
    with pytest.raises(DataError, match=r"'images' \(ImageData\): .*im9.png: no such image file"):
        (folder / "list.txt").write_text("im9.png 1\n")
        setup_layer(layer_text(folder), [], num_top=2)
    with pytest.raises(NetConfigError, match="exactly 2 top"):
        setup_layer(layer_text(folder), [], num_top=1)
