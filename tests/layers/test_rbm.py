"""RBM: shapes, deterministic forward vs float64, the CD-k / PCD-k statistics against the
formula in NumPy with the same random draws, the sampler against exact model expectations,
the net's need-backward rule for self-trained layers, solverstate resume, and errors.

The RBM's parameter "gradient" is a stochastic contrastive-divergence estimate, not the
derivative of a forward quantity, so it has no check_gradient test (it is exempt in
test_gradient_coverage.EXEMPT); the formula tests below take its place.
"""
import itertools
import logging

import numpy as np
import pytest

from pycaffe_lite import _threads, rbm_eval
from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import DataError, NetConfigError, ShapeError
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.rng import get_rng, get_state, set_random_seed
from pycaffe_lite.solvers import get_solver

from .layer_test_template import blob_from, make_layer, setup_layer

GRADIENT_CHECKED: set = set()

FILLERS = ("weight_filler { type: 'gaussian' std: 0.5 } visible_bias_filler { type: 'uniform' min: -1 max: 1 } "
           "hidden_bias_filler { type: 'uniform' min: -1 max: 1 }")


def rbm(extra: str = "", num_hidden: int = 6, phase: str = "TRAIN", fillers: str = FILLERS) -> str:
    return (f'name: "rbm1" type: "RBM" phase: {phase} '
            f"rbm_param {{ num_hidden: {num_hidden} {fillers} {extra} }}")


def data(shape, seed=0, binary=False, gaussian=False):
    rs = np.random.default_rng(seed)
    if gaussian:
        return rs.standard_normal(shape).astype(np.float32)
    x = rs.random(shape)
    return (x < 0.4).astype(np.float32) if binary else x.astype(np.float32)


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def params64(layer):
    return (b.data.astype(np.float64) for b in layer.blobs)


@pytest.fixture
def logs(caplog):
    """Capture the package logger even when a CLI test switched its propagation off."""
    logger = logging.getLogger("pycaffe_lite")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old)


def run(layer, bottom, top):
    """One training pass: forward, zeroed diffs, backward."""
    layer.run_forward(bottom, top)
    for b in layer.blobs:
        b.diff[...] = 0
    layer.run_backward(top, [True] * len(bottom), bottom)


# ------------------------------------------------------------------------------ shapes
def test_shapes_and_default_fillers():
    layer, _, top = setup_layer(rbm(fillers="", num_hidden=50), [data((4, 2, 3, 5))], num_top=2)
    assert [b.shape for b in layer.blobs] == [(50, 30), (30,), (50,)]
    assert top[0].shape == (4, 50) and top[1].shape == ()
    W = layer.blobs[0].data
    assert 0.007 < W.std() < 0.013 and abs(W.mean()) < 0.003  # gaussian std 0.01
    assert np.all(layer.blobs[1].data == 0) and np.all(layer.blobs[2].data == 0)


def test_loaded_blobs_are_kept():
    layer = make_layer(rbm())
    layer.blobs = [Blob((6, 4)), Blob((4,)), Blob((6,))]
    layer.blobs[0].data[...] = 0.5
    layer.set_up([blob_from(data((2, 4)))], [Blob()])
    assert np.all(layer.blobs[0].data == 0.5)


# ------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("phase", ["TEST", "TRAIN"])
def test_forward_matches_float64_reference(kind, phase):
    gaussian = kind == "gaussian"
    extra = "visible_type: GAUSSIAN" if gaussian else ""
    x, held = data((5, 7), 0, gaussian=gaussian), data((3, 7), 1, gaussian=gaussian)
    layer, bottom, top = setup_layer(rbm(extra, phase=phase), [x, held], num_top=3)
    layer.run_forward(bottom, top)
    W, b, c = params64(layer)
    h = sig(c + x.astype(np.float64) @ W.T)
    np.testing.assert_allclose(top[0].data, h, atol=2e-7)
    mean = h @ W + b
    recon = mean if gaussian else sig(mean)
    assert float(top[1].data) == pytest.approx(np.sum((x - recon) ** 2) / 5, rel=1e-5)
    assert float(top[1].data) == pytest.approx(rbm_eval.reconstruction_error(x, W, b, c, kind), rel=1e-5)
    gap = rbm_eval.free_energy(x, W, b, c, kind).mean() - rbm_eval.free_energy(held, W, b, c, kind).mean()
    assert float(top[2].data) == pytest.approx(gap, rel=1e-5, abs=1e-5)


def test_tops_are_not_a_loss():
    layer, bottom, top = setup_layer(rbm(), [data((4, 7)), data((4, 7), 1)], num_top=3)
    assert layer.loss_weights == [0.0, 0.0, 0.0]
    assert layer.run_forward(bottom, top) == 0.0


# ------------------------------------------------------------------------------ CD statistics
def reference_cd(x, W, b, c, rng, k, sample_visible, gaussian, chain=None):
    """The CD-k / PCD-k estimate in float64 NumPy, drawing what the layer draws, in its order."""
    N, H = x.shape[0], W.shape[0]
    x = x.astype(np.float64)
    h_data = sig(c + x @ W.T)
    hs = chain.astype(np.float64) if chain is not None else (rng.random((N, H), dtype=np.float32) < h_data) * 1.0
    for step in range(k):
        mean = hs @ W + b
        if gaussian:
            v = mean + rng.standard_normal(mean.shape, dtype=np.float32) if sample_visible else mean
        else:
            v = sig(mean)
            if sample_visible:
                v = (rng.random(v.shape, dtype=np.float32) < v) * 1.0
        h_model = sig(c + v @ W.T)
        if step + 1 < k or chain is not None:
            hs = (rng.random((N, H), dtype=np.float32) < h_model) * 1.0
    dW = -(h_data.T @ x - h_model.T @ v) / N
    db = -(x.sum(0) - v.sum(0)) / N
    dc = -(h_data.sum(0) - h_model.sum(0)) / N
    return dW, db, dc, hs


CD_CASES = {
    "cd1": ("", 1, False, False),
    "cd3": ("cd_k: 3", 3, False, False),
    "cd2_sampled_visible": ("cd_k: 2 sample_visible: true", 2, True, False),
    "gaussian_cd1": ("visible_type: GAUSSIAN", 1, False, True),
    "gaussian_cd2_sampled": ("visible_type: GAUSSIAN cd_k: 2 sample_visible: true", 2, True, True),
}


@pytest.fixture(params=["serial", "split"])
def split(request, monkeypatch):
    """Run a test with the layer's products whole (one thread) and split in halves over two
    threads (forced at any size, even on one processor): both must meet the same formula."""
    from pycaffe_lite.layers import rbm as rbm_module

    if request.param == "split":
        monkeypatch.setattr(rbm_module, "SPLIT_PRODUCTS", True)
        monkeypatch.setattr(rbm_module, "MIN_SPLIT_MACS", 0)
        monkeypatch.setattr(rbm_module, "available_cpus", lambda: 2)
    else:
        monkeypatch.setattr(rbm_module, "MIN_SPLIT_MACS", float("inf"))
    return request.param


@pytest.mark.parametrize("case", CD_CASES.values(), ids=CD_CASES.keys())
def test_cd_estimate_matches_formula_with_same_draws(case, split):
    extra, k, sample_visible, gaussian = case
    x = data((6, 9), 0, gaussian=gaussian, binary=not gaussian)
    layer, bottom, top = setup_layer(rbm(extra), [x])
    set_random_seed(123)
    run(layer, bottom, top)
    dW, db, dc, _ = reference_cd(x, *params64(layer), np.random.default_rng(123), k, sample_visible, gaussian)
    np.testing.assert_allclose(layer.blobs[0].diff, dW, atol=2e-6)
    np.testing.assert_allclose(layer.blobs[1].diff, db, atol=2e-6)
    np.testing.assert_allclose(layer.blobs[2].diff, dc, atol=2e-6)


@pytest.mark.parametrize("extra,sample_visible", [("", True), ("sample_visible: false cd_k: 2", False)])
def test_pcd_chains_persist_and_match_formula(extra, sample_visible, split):
    """PCD-1 with sampled visible states is scikit-learn's BernoulliRBM update."""
    k = 2 if "cd_k: 2" in extra else 1
    x = data((5, 8), 0, binary=True)
    layer, bottom, top = setup_layer(rbm("persistent: true " + extra), [x])
    assert layer.get_state()[0].shape == (5, 6) and not layer.get_state()[0].any()  # chains start at h = 0
    set_random_seed(7)
    rng = np.random.default_rng(7)
    chain = np.zeros((5, 6))
    for it in range(3):
        bottom[0].data[...] = data((5, 8), it, binary=True)  # new data, same chains
        run(layer, bottom, top)
        dW, db, dc, chain = reference_cd(bottom[0].data, *params64(layer), rng, k, sample_visible, False, chain)
        np.testing.assert_allclose(layer.blobs[0].diff, dW, atol=2e-6)
        np.testing.assert_allclose(layer.blobs[1].diff, db, atol=2e-6)
        np.testing.assert_allclose(layer.blobs[2].diff, dc, atol=2e-6)
        np.testing.assert_array_equal(layer.get_state()[0], chain)
    assert layer.get_state()[0].any()


def exact_model_statistics(W, b, c, gaussian):
    """<h x^T>, <x>, <h> under the model, by enumeration (over h for Gaussian units)."""
    H, V = W.shape
    hs = np.array(list(itertools.product([0.0, 1.0], repeat=H)))
    if gaussian:
        m = hs @ W
        logp = hs @ c + m @ b + 0.5 * np.sum(m * m, axis=1)
        p = np.exp(logp - logp.max())
        p /= p.sum()
        mean_x = b + m  # E[x | h]
        return (p[:, None, None] * hs[:, :, None] * mean_x[:, None, :]).sum(0), p @ mean_x, p @ hs
    xs = np.array(list(itertools.product([0.0, 1.0], repeat=V)))
    joint = np.exp(xs @ b + (hs @ c)[:, None] + hs @ W @ xs.T)  # (2^H, 2^V)
    joint /= joint.sum()
    return np.einsum("hv,hj,vi->ji", joint, hs, xs), joint.sum(0) @ xs, joint.sum(1) @ hs


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_pcd_chains_sample_the_model(kind):
    """Averaged over a long run of persistent chains (weights fixed), the model statistics
    in the diffs approach their exact values: the sampler draws from the RBM itself."""
    gaussian = kind == "gaussian"
    extra = "persistent: true" + (" visible_type: GAUSSIAN" if gaussian else "")
    x = data((400, 4), 0, gaussian=gaussian, binary=not gaussian)
    layer, bottom, top = setup_layer(rbm(extra, num_hidden=3, fillers="weight_filler { type: 'gaussian' std: 0.7 } "
                                         "visible_bias_filler { type: 'uniform' min: -1 max: 1 } "
                                         "hidden_bias_filler { type: 'uniform' min: -1 max: 1 }"), [x])
    W, b, c = params64(layer)
    xd = x.astype(np.float64)
    h_data = sig(c + xd @ W.T)
    set_random_seed(5)
    for _ in range(10):  # burn in
        run(layer, bottom, top)
    sums = [np.zeros((3, 4)), np.zeros(4), np.zeros(3)]
    n = 60
    for _ in range(n):
        run(layer, bottom, top)
        # diff = -(data - model) / N  =>  model statistic = data statistic + diff
        sums[0] += h_data.T @ xd / 400 + layer.blobs[0].diff
        sums[1] += xd.mean(0) + layer.blobs[1].diff
        sums[2] += h_data.mean(0) + layer.blobs[2].diff
    for got, want in zip(sums, exact_model_statistics(W, b, c, gaussian)):
        np.testing.assert_allclose(got / n, want, atol=0.03)


def test_param_diffs_accumulate_and_bottom_diff_is_zero():
    x = data((4, 7), binary=True)
    layer, bottom, top = setup_layer(rbm(), [x])
    set_random_seed(1)
    run(layer, bottom, top)
    first = [b.diff.copy() for b in layer.blobs]
    bottom[0].diff[...] = 5
    layer.run_backward(top, [True], bottom)  # the same statistics again, without clearing
    for b, f in zip(layer.blobs, first):
        np.testing.assert_allclose(b.diff, 2 * f, rtol=1e-6, atol=1e-7)
    assert np.all(bottom[0].diff == 0)


def test_param_propagate_down_is_honoured():
    layer, bottom, top = setup_layer(rbm(), [data((4, 7))])
    layer.param_propagate_down = [False, True, True]
    set_random_seed(1)
    run(layer, bottom, top)
    assert np.all(layer.blobs[0].diff == 0)
    assert np.any(layer.blobs[1].diff != 0) and np.any(layer.blobs[2].diff != 0)


@pytest.mark.parametrize("how", ["test_phase", "frozen"])
def test_feature_layer_draws_nothing_and_learns_nothing(how):
    x = data((4, 7))
    layer, bottom, top = setup_layer(rbm("persistent: true", phase="TEST" if how == "test_phase" else "TRAIN"), [x])
    if how == "frozen":
        layer.param_propagate_down = [False, False, False]
    set_random_seed(3)
    before = get_state()
    run(layer, bottom, top)
    assert get_state() == before
    assert all(np.all(b.diff == 0) for b in layer.blobs)
    assert not any(chain.any() for chain in layer.get_state())  # frozen: chains untouched; TEST: none


def test_products_run_on_one_blas_thread(monkeypatch):
    """Forward and backward switch BLAS to one thread (threadpoolctl) and restore it after."""
    from pycaffe_lite.layers import rbm as rbm_module

    class FakeBlas:
        def __init__(self):
            self.threads, self.calls = 2, []

        def get_num_threads(self):
            return self.threads

        def set_num_threads(self, n):
            self.calls.append(n)
            self.threads = n

    fake = FakeBlas()
    monkeypatch.setattr(_threads, "_BLAS_LIBS", [fake])
    seen = []
    real_matmul = np.matmul
    monkeypatch.setattr(rbm_module.np, "matmul", lambda *a, **k: seen.append(fake.threads) or real_matmul(*a, **k))
    layer, bottom, top = setup_layer(rbm(), [data((4, 7))])
    set_random_seed(1)
    run(layer, bottom, top)
    assert seen and set(seen) == {1}
    assert fake.calls == [1, 2, 1, 2] and fake.threads == 2  # forward, then backward


SPLIT_CASES = {  # rbm_param, phase, number of tops, products per iteration (forward), weight statistic?
    # CD-1: W x^T, h W, W x_model^T, + P(h|x) W for the recon top; backward: P^T Q
    "cd1_recon_gap": ("", "TRAIN", 3, 4, True),
    "cd2_sampled_visible": ("cd_k: 2 sample_visible: true", "TRAIN", 1, 5, True),
    "pcd2": ("persistent: true cd_k: 2", "TRAIN", 2, 5, True),
    "gaussian_sampled": ("visible_type: GAUSSIAN sample_visible: true", "TRAIN", 2, 4, True),
    "test_phase": ("", "TEST", 3, 2, False),
}


@pytest.mark.parametrize("worker", ["gemm", "python"])
@pytest.mark.parametrize("case", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_split_over_two_threads_gives_the_serial_numbers(case, worker, monkeypatch):
    """Products split in halves of the hidden / visible units, one on a worker thread (the GIL-free
    BLAS worker, or the Python worker where NumPy's sgemm cannot be called directly): the same
    tops, diffs and chains as the serial path over several training iterations (the same random
    draws; BLAS may round a sub-product differently in the last bit, hence the tolerance)."""
    from pycaffe_lite import _split
    from pycaffe_lite.layers import rbm as rbm_module

    extra, phase, num_top, per_iter, statistic = case
    if worker == "python":
        monkeypatch.setattr(_split, "_get_gemm_worker", lambda: None)
    elif _split._get_gemm_worker() is None:
        pytest.fail("NumPy's OpenBLAS sgemm was not found: the split runs on the Python worker only")
    else:  # split every product (the chooser is tested in tests/test_split.py)
        monkeypatch.setattr(_split._get_gemm_worker().chooser, "whole_now", lambda: False)
    gaussian = "GAUSSIAN" in extra
    x = data((7, 45), 0, gaussian=gaussian)
    bottoms = [x, data((5, 45), 1, gaussian=gaussian)] if num_top == 3 else [x]
    calls, runs = [], []
    real_matmul, real_gemm, real_run = _split.matmul_halves, _split.gemm_halves, _split.run_halves
    monkeypatch.setattr(rbm_module, "matmul_halves", lambda f, s, w, *m: calls.append((f[2].shape, s[2].shape)) or
                        real_matmul(f, s, w, *m))
    monkeypatch.setattr(rbm_module, "gemm_halves", lambda f, s, w, *a: calls.append((f[2].shape, s[2].shape)) or
                        real_gemm(f, s, w, *a))
    monkeypatch.setattr(_split, "run_halves", lambda *a: runs.append(1) or real_run(*a))
    monkeypatch.setattr(rbm_module, "available_cpus", lambda: 2)
    monkeypatch.setattr(rbm_module, "SPLIT_PRODUCTS", True)
    results = {}
    for mode, min_macs in (("serial", float("inf")), ("split", 0)):
        monkeypatch.setattr(rbm_module, "MIN_SPLIT_MACS", min_macs)
        set_random_seed(11)
        layer, bottom, top = setup_layer(rbm(extra, num_hidden=37, phase=phase), bottoms, num_top=num_top)
        outs = []
        for _ in range(3):
            run(layer, bottom, top)
            outs += [t.data.copy() for t in top] + [b.diff.copy() for b in layer.blobs] + layer.get_state()
            for b in layer.blobs:
                b.data[...] -= 0.5 * b.diff
        results[mode] = outs
        assert bool(calls) == (mode == "split")
    assert len(results["split"]) == len(results["serial"])
    for a, b in zip(results["serial"], results["split"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # 37 hidden units split at 16 (rows of the unit-major outputs), 45 visible at 16 (columns):
    # halves start on 64-byte boundaries
    assert {(f[0], s[0]) for f, s in calls if f[0] != s[0]} <= {(16, 21)}
    assert {(f[1], s[1]) for f, s in calls if f[1] != s[1]} <= {(16, 29)}
    # the weight statistic: accumulated into the diff by the BLAS worker, or (its try refused)
    # a split product into G on the Python worker
    assert len(calls) == 3 * (per_iter + statistic * (1 if worker == "gemm" else 2))
    assert bool(runs) == (worker == "python")  # the Python worker only as the fallback


@pytest.mark.parametrize("on,cpus,N,expect_split", [(True, 2, 20, True), (True, 1, 20, False), (True, 2, 2, False),
                                                     (False, 2, 20, False)])
def test_split_needs_two_processors_and_a_big_enough_layer(monkeypatch, on, cpus, N, expect_split):
    from pycaffe_lite.layers import rbm as rbm_module

    monkeypatch.setattr(rbm_module, "available_cpus", lambda: cpus)
    monkeypatch.setattr(rbm_module, "SPLIT_PRODUCTS", on)
    layer, _, _ = setup_layer(rbm(num_hidden=500, fillers=""), [data((N, 784))])
    assert (layer._hcut is not None) == expect_split  # 2 x 500 x 784 < MIN_SPLIT_MACS
    assert (layer._vcut is not None) == expect_split


# ------------------------------------------------------------------------------ state
def test_get_and_set_state():
    layer, _, _ = setup_layer(rbm("persistent: true"), [data((3, 7))])
    chain = (np.arange(18).reshape(3, 6) % 2).astype(np.float32)
    layer.set_state([chain])
    np.testing.assert_array_equal(layer.get_state()[0], chain)
    with pytest.raises(DataError, match=r"rbm1.*\(4, 6\).*\(3, 6\).*batch size"):
        layer.set_state([np.zeros((4, 6), np.float32)])
    cd, _, _ = setup_layer(rbm(), [data((3, 7))])
    assert cd.get_state() == []


def test_cd_layer_ignores_saved_chains(logs):
    cd, _, _ = setup_layer(rbm(), [data((3, 7))])
    cd.set_state([np.ones((3, 6), np.float32)])
    assert "rbm1" in logs.text and "ignoring 3 saved persistent chains" in logs.text


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad,lo,hi", [(-0.5, "-0.5", "0.9"), (3.0, "0", "3"), (np.nan, "nan", "nan")])
def test_bernoulli_data_outside_unit_interval(bad, lo, hi):
    x = data((3, 7)) * 0.9
    x[0, 0] = 0.0
    x[1, 2] = bad
    if bad < 0:
        x[2, 3] = 0.9
    layer, bottom, top = setup_layer(rbm(), [x])
    with pytest.raises(DataError) as err:
        layer.run_forward(bottom, top)
    msg = str(err.value)
    assert "layer 'rbm1' (RBM)" in msg and "[0, 1]" in msg and "bottom0" in msg
    assert f"from {lo} to {hi}" in msg and "scale: 0.00390625" in msg and "GAUSSIAN" in msg


def test_gaussian_units_take_any_real_data():
    layer, bottom, top = setup_layer(rbm("visible_type: GAUSSIAN"), [data((3, 7), gaussian=True) * 5])
    layer.run_forward(bottom, top)


def test_held_out_batch_outside_unit_interval():
    layer, bottom, top = setup_layer(rbm(), [data((3, 7)), data((2, 7)) + 1.5], num_top=3)
    with pytest.raises(DataError, match="rbm1.*bottom1.*from 1.5"):
        layer.run_forward(bottom, top)


@pytest.mark.parametrize("param,pattern", [
    ("cd_k: 0", r"rbm1.*cd_k must be at least 1 Gibbs step, got 0"),
    ("persistent: true num_chains: 5", r"rbm1.*num_chains is 5 but the batch holds 3 items.*set num_chains to 3"),
    ("num_chains: 3", r"rbm1.*num_chains \(3\) is only used with persistent: true"),
])
def test_bad_parameters(param, pattern):
    with pytest.raises(NetConfigError, match=pattern):
        setup_layer(rbm(param), [data((3, 7))])


@pytest.mark.parametrize("text", ['name: "rbm1" type: "RBM"', rbm(num_hidden=0)])
def test_num_hidden_zero_or_missing(text):
    with pytest.raises(NetConfigError, match="rbm1.*num_hidden must be set to a positive number"):
        setup_layer(text, [data((3, 7))])


def test_test_phase_keeps_no_chains():
    layer, bottom, top = setup_layer(rbm("persistent: true num_chains: 5", phase="TEST"), [data((3, 7))])
    layer.run_forward(bottom, top)
    assert layer.get_state() == []


def test_pcd_batch_size_cannot_change():
    layer, bottom, top = setup_layer(rbm("persistent: true num_chains: 3"), [data((3, 7))])
    bottom[0].reshape(4, 7)
    with pytest.raises(ShapeError, match="rbm1.*4 items but there are 3 persistent chains"):
        layer.run_forward(bottom, top)


def test_cd_batch_size_may_change():
    layer, bottom, top = setup_layer(rbm(), [data((3, 7))])
    bottom[0].reshape(5, 7)
    bottom[0].data[...] = data((5, 7))
    run(layer, bottom, top)
    assert top[0].shape == (5, 6)


def test_input_size_cannot_change():
    layer, bottom, top = setup_layer(rbm(), [data((3, 7))])
    bottom[0].reshape(3, 8)
    with pytest.raises(ShapeError, match=r"rbm1.*\(3, 8\) has 8 visible units.*\(6, 7\)"):
        layer.run_forward(bottom, top)


def test_loss_weight_is_refused():
    with pytest.raises(NetConfigError, match="rbm1.*carry no loss"):
        setup_layer(rbm() + " loss_weight: 0 loss_weight: 1", [data((3, 7))], num_top=2)


def test_held_out_bottom_and_gap_top_go_together():
    with pytest.raises(NetConfigError, match="rbm1.*second bottom.*free-energy gap"):
        setup_layer(rbm(), [data((3, 7)), data((3, 7))], num_top=2)
    with pytest.raises(NetConfigError, match="rbm1.*top 2.*second bottom"):
        setup_layer(rbm(), [data((3, 7))], num_top=3)
    with pytest.raises(ShapeError, match=r"rbm1.*held-out.*\(2, 5\) has 5 visible units"):
        setup_layer(rbm(), [data((3, 7)), data((2, 5))], num_top=3)


# ------------------------------------------------------------------------------ in a net
def input_net(body: str, extra: str = "") -> str:
    return f"""name: "t" {extra}
    layer {{ name: "in" type: "Input" top: "data" top: "target"
             input_param {{ shape {{ dim: 4 dim: 7 }} shape {{ dim: 4 dim: 2 }} }} }}
    {body}"""


RBM_IN_NET = 'layer { name: "rbm1" type: "RBM" bottom: "data" top: "h" top: "recon" rbm_param { num_hidden: 5 } %s }'


def test_net_runs_backward_of_a_self_trained_layer_without_a_loss():
    net = Net(input_net(RBM_IN_NET % ""), phase=0)
    li = net.layer_names.index("rbm1")
    assert net.layer_need_backward[li] and net.bottom_need_backward[li] == [False]
    net.blobs["data"].data[...] = data((4, 7))
    set_random_seed(2)
    assert net.forward_backward() == 0.0
    assert all(np.any(b.diff != 0) for b in net.layer_dict["rbm1"].blobs)


def test_net_skips_a_frozen_rbm_and_a_lossless_inner_product():
    frozen = RBM_IN_NET % "param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }"
    ip = 'layer { name: "ip" type: "InnerProduct" bottom: "h" top: "y" inner_product_param { num_output: 2 } }'
    net = Net(input_net(frozen + ip), phase=0)
    assert not net.layer_need_backward[net.layer_names.index("rbm1")]
    assert not net.layer_need_backward[net.layer_names.index("ip")]  # Caffe's rule, unchanged


def test_rbm_under_a_loss():
    body = (RBM_IN_NET % "") + """
    layer { name: "ip" type: "InnerProduct" bottom: "h" top: "y"
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" }"""
    net = Net(input_net(body, "force_backward: true"), phase=0)
    li = net.layer_names.index("rbm1")
    assert net.layer_need_backward[li] and net.bottom_need_backward[li] == [True]
    net.blobs["data"].data[...] = data((4, 7))
    net.blobs["target"].data[...] = 1.0
    set_random_seed(2)
    loss = net.forward_backward()
    y = net.blobs["y"].data.astype(np.float64)
    assert loss == pytest.approx(np.sum((y - 1.0) ** 2) / 8, rel=1e-5)  # the recon top adds nothing
    assert np.all(net.blobs["data"].diff == 0)


# ------------------------------------------------------------------------------ solver
def dummy_solver(tmp_path, rbm_param: str, extra: str = ""):
    net = f"""name: "rbm_net"
      layer {{ name: "data" type: "DummyData" top: "data"
               dummy_data_param {{ shape {{ dim: 6 dim: 10 }} data_filler {{ type: "uniform" }} }} }}
      layer {{ name: "rbm1" type: "RBM" bottom: "data" top: "h" top: "recon"
               rbm_param {{ num_hidden: 8 {rbm_param} }} }}"""
    text = (f'net_param {{ {net} }} base_lr: 0.1 momentum: 0.5 weight_decay: 0.001 lr_policy: "fixed" '
            f'max_iter: 100 display: 0 random_seed: 11 snapshot_prefix: "{tmp_path}/snap" {extra}')
    return get_solver(text)


@pytest.mark.parametrize("rbm_param", ["persistent: true", "cd_k: 2"])
def test_resume_equals_uninterrupted(tmp_path, rbm_param):
    full = dummy_solver(tmp_path / "a", rbm_param)
    full.step(6)
    half = dummy_solver(tmp_path / "b", rbm_param)
    half.step(3)
    _, state_path = half.snapshot()
    state = caffe_pb2.SolverState()
    with open(state_path, "rb") as f:
        state.ParseFromString(f.read())
    expected_names = ["rbm1"] if "persistent" in rbm_param else []
    assert list(state.pycaffe_layer_state_name) == expected_names
    get_rng().random(100)  # disturb the shared stream: restore must put it back
    resumed = dummy_solver(tmp_path / "c", rbm_param)
    resumed.restore(state_path)
    resumed.step(3)
    for a, b in zip(full.net.learnable_params, resumed.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
    for a, b in zip(full.net.layers, resumed.net.layers):
        for sa, sb in zip(a.get_state(), b.get_state()):
            np.testing.assert_array_equal(sa, sb)


def test_restore_without_chains_warns(tmp_path, logs):
    cd = dummy_solver(tmp_path / "a", "")
    cd.step(1)
    _, state_path = cd.snapshot()
    pcd = dummy_solver(tmp_path / "b", "persistent: true")
    pcd.restore(state_path)
    assert "no saved state for layer 'rbm1'" in logs.text


def test_training_lowers_reconstruction_error(mnist_small):
    net = f"""name: "rbm_mnist"
      layer {{ name: "mnist" type: "Data" top: "data" top: "label"
               data_param {{ source: "{mnist_small}/mnist_train_lmdb" batch_size: 10 backend: LMDB }}
               transform_param {{ scale: 0.00390625 }} }}
      layer {{ name: "rbm1" type: "RBM" bottom: "data" top: "h" top: "recon" rbm_param {{ num_hidden: 32 }} }}"""
    solver = get_solver(f'net_param {{ {net} }} base_lr: 0.1 momentum: 0.5 lr_policy: "fixed" max_iter: 200 '
                        'display: 0 random_seed: 3')
    held = np.concatenate([solver.net.forward(blobs=["data"])["data"].reshape(10, -1).copy() for _ in range(3)])
    layer = solver.net.layer_dict["rbm1"]
    before = rbm_eval.reconstruction_error(held, *rbm_eval.params_from_layer(layer))
    solver.step(120)
    after = rbm_eval.reconstruction_error(held, *rbm_eval.params_from_layer(layer))
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("owner,message", [
    ("ghost", "saved state of layer 'ghost' is not used: net 'rbm_net' has no such layer"),
    ("data", "layer 'data' (DummyData): carries no state across iterations; 1 saved arrays ignored"),
])
def test_restore_with_misnamed_layer_state_warns(tmp_path, logs, owner, message):
    pcd = dummy_solver(tmp_path / "a", "persistent: true")
    pcd.step(1)
    _, state_path = pcd.snapshot()
    state = caffe_pb2.SolverState()
    with open(state_path, "rb") as f:
        state.ParseFromString(f.read())
    state.pycaffe_layer_state_name[0] = owner
    with open(state_path, "wb") as f:
        f.write(state.SerializeToString())
    other = dummy_solver(tmp_path / "b", "persistent: true")
    other.restore(state_path)
    assert message in logs.text
    assert "no saved state for layer 'rbm1'" in logs.text
