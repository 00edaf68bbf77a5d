"""Test helpers users may reuse for their own layers: a gradient checker like Caffe's.

``check_gradient`` compares a layer's analytic gradient (its ``backward``) with central
differences of a fixed random linear objective ``L = sum_i r_i * top_i``:
step 1e-2, threshold 1e-3 scaled by ``max(|analytic|, |numeric|, 1)``, and elements
within ``kink_range`` of ``kink`` skipped (non-differentiable points of ReLU-like layers).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .blob import Blob
from .rng import set_random_seed


def _objective(top: Sequence[Blob], weights: Sequence[np.ndarray]) -> float:
    return float(sum(np.dot(t.data.ravel().astype(np.float64), w.ravel()) for t, w in zip(top, weights)))


def check_gradient(
    layer,
    bottom: Sequence[Blob],
    top: Sequence[Blob],
    *,
    check_bottom: Sequence[int] | None = None,
    check_params: bool = True,
    step: float = 1e-2,
    threshold: float = 1e-3,
    kink: float = 0.0,
    kink_range: float = -1.0,
    seed: int | None = None,
    max_checks_per_blob: int | None = None,
    setup: bool = True,
) -> int:
    """Raise ``AssertionError`` naming the first wrong element; return how many were checked.

    ``seed`` reseeds the shared RNG before every forward (for stochastic layers such as
    Dropout).  ``max_checks_per_blob`` samples that many elements per blob (large blobs).
    """
    if setup:
        layer.set_up(bottom, top)
    rs = np.random.default_rng(1701)

    def forward() -> None:
        if seed is not None:
            set_random_seed(seed)
        layer.run_forward(bottom, top)

    forward()
    weights = [rs.uniform(-1.0, 1.0, size=t.shape) for t in top]
    check_bottom = list(range(len(bottom))) if check_bottom is None else list(check_bottom)
    targets: list[tuple[str, Blob]] = [(f"bottom[{i}]", bottom[i]) for i in check_bottom]
    if check_params:
        targets += [(f"param blob {i}", b) for i, b in enumerate(layer.blobs)]

    # analytic gradients
    for b in layer.blobs:
        b.diff[...] = 0
    for t, w in zip(top, weights):
        t.diff[...] = w
    propagate_down = [i in check_bottom for i in range(len(bottom))]
    layer.run_backward(top, propagate_down, bottom)
    analytic = [b.diff.astype(np.float64).copy() for _, b in targets]

    checked = 0
    for (label, blob), grad in zip(targets, analytic):
        flat = blob.data.reshape(-1)
        indices = np.arange(flat.size)
        if max_checks_per_blob is not None and flat.size > max_checks_per_blob:
            indices = rs.choice(flat.size, size=max_checks_per_blob, replace=False)
        for idx in indices:
            original = float(flat[idx])
            if kink_range > 0 and abs(original - kink) < kink_range:
                continue
            flat[idx] = original + step
            forward()
            pos = _objective(top, weights)
            flat[idx] = original - step
            forward()
            neg = _objective(top, weights)
            flat[idx] = original
            numeric = (pos - neg) / (2.0 * step)
            computed = float(grad.reshape(-1)[idx])
            scale = max(abs(computed), abs(numeric), 1.0)
            if abs(computed - numeric) > threshold * scale:
                raise AssertionError(
                    f"layer '{layer.name}' ({layer.type}): gradient of {label} element {idx}: "
                    f"backward gives {computed:.6g}, central difference {numeric:.6g}"
                )
            checked += 1
    forward()
    return checked
