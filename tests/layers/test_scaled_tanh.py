"""ScaledTanH: LeCun's A tanh(S a): forward against float64, f(+-1) = +-1, gradients, in place."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import assert_in_place_matches, forward, setup_layer

GRADIENT_CHECKED = {"ScaledTanH"}

SHAPE = (2, 3, 4, 5)


@pytest.mark.parametrize("param, A, S", [("", 1.7159, 2 / 3), ("scaled_tanh_param { amplitude: 2 slope: 0.5 }", 2, 0.5)])
def test_forward(param, A, S):
    layer, bottom, top = setup_layer(f'type: "ScaledTanH" {param}', [SHAPE])
    bottom[0].data[...] *= 6  # the saturated tails too
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, A * np.tanh(S * bottom[0].data.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_default_maps_plus_minus_one_to_themselves():
    layer, bottom, top = setup_layer('type: "ScaledTanH"', [np.array([-1.0, 0.0, 1.0])])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, [-1.0, 0.0, 1.0], atol=2e-5)


@pytest.mark.parametrize("param", ["", "scaled_tanh_param { amplitude: -1.5 slope: 1.5 }"])
def test_gradient(param):
    layer, bottom, top = setup_layer(f'type: "ScaledTanH" {param}', [SHAPE])
    check_gradient(layer, bottom, top, setup=False)


def test_in_place():
    assert_in_place_matches('type: "ScaledTanH"', SHAPE)


def test_zero_amplitude_is_refused():
    with pytest.raises(NetConfigError, match=r"layer 'scaledtanh' \(ScaledTanH\): scaled_tanh_param.amplitude "
                                             r"must be non-zero"):
        setup_layer('type: "ScaledTanH" scaled_tanh_param { amplitude: 0 }', [SHAPE])
