"""Weight fillers, registered under Caffe's ``type`` strings.

Fan sizes follow Caffe: ``fan_in = count / shape[0]``, ``fan_out = count / shape[1]``
(``variance_norm``: FAN_IN by default, FAN_OUT, or AVERAGE of the two).

The usual initialisations, spelled as Caffe spells them:

* tiny gaussian, 0.001 N(0, 1): ``type: "gaussian" std: 0.001`` (activations shrink by ~fan_in *
  1e-6 / 2 per ReLU layer: fine for LeNet-sized nets, gone after a few wide layers);
* variance calibrated by 1/sqrt(fan_in) (Var(w) = 1/n, Glorot & Bengio 2010):
  ``type: "xavier"`` (uniform(+-sqrt(3/n)), whose variance is 1/n); through ReLUs the activation
  variance halves per layer;
* He et al. 2015, N(0, sqrt(2/fan_in)) for ReLU nets: ``type: "msra"``; keeps the variance of
  ReLU activations constant through depth.

``tests/test_filler.py`` measures all three through ten 256-wide InnerProduct+ReLU layers.
"""
from __future__ import annotations

import math

import numpy as np

from .blob import Blob
from .errors import NetConfigError
from .registry import FILLERS, register_filler
from .rng import get_rng

FAN_IN, FAN_OUT, AVERAGE = 0, 1, 2


def fill(blob: Blob, filler_param) -> None:
    """Fill ``blob.data`` as ``filler_param`` (a FillerParameter) says."""
    fn = FILLERS.get(filler_param.type or "constant")
    blob.data[...] = fn(blob.shape, filler_param).astype(np.float32, copy=False)


def _fan(shape: tuple[int, ...], param) -> float:
    count = int(np.prod(shape)) if shape else 1
    fan_in = count / shape[0] if shape and shape[0] else count
    fan_out = count / shape[1] if len(shape) > 1 and shape[1] else count
    norm = param.variance_norm
    if norm == FAN_OUT:
        return fan_out
    if norm == AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


@register_filler("constant")
def constant(shape, param) -> np.ndarray:
    return np.full(shape, param.value, np.float32)


@register_filler("uniform")
def uniform(shape, param) -> np.ndarray:
    return get_rng().uniform(param.min, param.max, size=shape)


@register_filler("gaussian")
def gaussian(shape, param) -> np.ndarray:
    """N(mean, std); with ``sparse`` >= 0 each weight is kept with p = sparse / num_outputs."""
    # Drawn in float32, the blobs' type: 2-3x faster than float64 draws for CaffeNet's fc6.
    values = get_rng().standard_normal(size=shape, dtype=np.float32)
    values *= np.float32(param.std)
    values += np.float32(param.mean)
    if param.sparse >= 0:
        if len(shape) < 2:
            raise NetConfigError("gaussian filler with 'sparse' needs a blob of at least 2 axes")
        p = param.sparse / float(shape[0])
        values *= get_rng().random(size=shape) < p
    return values


@register_filler("positive_unitball")
def positive_unitball(shape, param) -> np.ndarray:
    """Uniform [0, 1), then each of the ``shape[0]`` rows scaled to sum to 1."""
    values = get_rng().random(size=shape).reshape(shape[0] if shape else 1, -1)
    values /= values.sum(axis=1, keepdims=True)
    return values.reshape(shape)


@register_filler("xavier")
def xavier(shape, param) -> np.ndarray:
    """Uniform(-a, a), a = sqrt(3 / n) (Glorot & Bengio 2010, Caffe's variant)."""
    scale = math.sqrt(3.0 / _fan(shape, param))
    return get_rng().uniform(-scale, scale, size=shape)


@register_filler("msra")
def msra(shape, param) -> np.ndarray:
    """N(0, sqrt(2 / n)) (He et al. 2015)."""
    std = math.sqrt(2.0 / _fan(shape, param))
    return get_rng().normal(0.0, std, size=shape)


@register_filler("bilinear")
def bilinear(shape, param) -> np.ndarray:
    """Bilinear upsampling kernels for Deconvolution (square kernels, 4-d blobs)."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise NetConfigError(f"bilinear filler needs a 4-d blob with square kernels, got shape {shape}")
    k = shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    x = np.arange(k)
    w1 = 1 - np.abs(x / f - c)
    kernel = np.outer(w1, w1)
    return np.broadcast_to(kernel, shape).copy()
