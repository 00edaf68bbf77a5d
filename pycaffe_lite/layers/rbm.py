"""RBM: a restricted Boltzmann machine trained by contrastive divergence (CD-k or PCD-k)."""

from __future__ import annotations

import numpy as np

from .._split import available_cpus, gemm_halves, matmul_halves, split_point
from .._threads import SerialBlas
from ..errors import DataError
from ..kernels import sampling as K
from ..layer import TRAIN, Layer
from ..log import logger
from ..proto import caffe_pb2
from ..registry import register_layer
from ..rng import get_rng

BERNOULLI = caffe_pb2.RBMParameter.BERNOULLI
GAUSSIAN = caffe_pb2.RBMParameter.GAUSSIAN

#: Products of at least this many multiply-adds (N * H * V) may be split in two halves run at once,
#: one on the calling thread and one on pycaffe_lite/_split.py's GIL-free worker, each with one BLAS
#: thread, when two processors are available and that has been faster lately (_split._Chooser
#: measures both ways as training runs).  SPLIT_PRODUCTS switches it on.  It is on: at the bar's
#: size (20 x 500 x 784, CD-1) an epoch took 0.11-0.12 s split vs 0.14 s serial on an idle 2-core
#: machine (benchmarks/rbm_epoch.py, OpenBLAS's SkylakeX kernel); with the other core busy the
#: chooser settles on whole products (0.15 vs 0.14 s serial).  BLAS's own two threads made these
#: small products 10-100x slower on a busy machine; the split never collapses like that.
#: benchmarks/rbm_epoch.py --serial measures the serial path.
SPLIT_PRODUCTS = True
MIN_SPLIT_MACS = 1 << 20

@register_layer("RBM")
class RBMLayer(Layer):
    """Restricted Boltzmann machine: binary hidden units h over visible units x.

    Energy ``E(x, h) = -b.x - c.h - h.W x`` (Bernoulli visible units) or
    ``E(x, h) = 0.5 ||x - b||^2 - c.h - h.W x`` (Gaussian visible units, unit variance);
    ``P(h_j = 1 | x) = sigmoid(c_j + W_j x)``; ``P(x_i = 1 | h) = sigmoid(b_i + W^T_i h)``
    (Bernoulli) or ``x | h ~ N(b + W^T h, I)`` (Gaussian).

    Bottom 0: x (N, ...) flattened to (N, V); Bernoulli visible units need values in [0, 1].
    Bottom 1 (optional): a held-out batch (M, ...) with the same V, for top 2.
    Top 0: ``P(h | x) = sigmoid(c + x W^T)`` (N, H), so RBMs stack and feed classifiers.
    Top 1 (optional): reconstruction error ``(1/N) sum_n ||x_n - xr_n||^2`` with the
    deterministic (mean-field) reconstruction ``xr = E[x | h = P(h | x)]``, i.e.
    ``sigmoid(b + P(h|x) W)`` (Bernoulli) or ``b + P(h|x) W`` (Gaussian); the same in TRAIN and
    TEST and as :func:`pycaffe_lite.rbm_eval.reconstruction_error`.
    Top 2 (optional, needs bottom 1): free-energy gap ``mean F(x) - mean F(x_heldout)``
    (Hinton's practical guide, "Monitoring the overfitting": a growing gap means over-fitting).
    Tops 1 and 2 are for display: their loss weight must be 0 (the default).
    Blobs: W (H, V), visible bias b (V,), hidden bias c (H,).  Default fillers: W gaussian
    std 0.01, biases 0.

    Training (TRAIN phase, some parameter with lr_mult != 0): forward runs the Gibbs chain,
    backward writes the estimate of the NEGATIVE log-likelihood gradient into the diffs::

        dW += -(<h x^T>_data - <h x^T>_model) / N
        db += -(sum x_data - sum x_model) / N
        dc += -(sum h_data - sum h_model) / N

    so that the solver's ``w -= lr * diff`` ascends the likelihood and momentum, weight
    decay, lr policies and every solver apply unchanged.  What is sampled and what is a
    probability (Hinton's practical guide, "How to collect statistics when using CD"):

    * data statistics use ``h_data = P(h | x)`` (probabilities);
    * the chain is driven by sampled hidden states: CD starts from ``h0 ~ P(h | x)``, PCD
      from its persistent hidden states; each of the ``cd_k`` steps computes
      ``x_model = P(x | h)`` (Bernoulli probabilities / Gaussian means, sampled when
      ``sample_visible``) and ``h_model = P(h | x_model)`` (probabilities, in the
      statistics), and samples ``h ~ h_model`` to drive the next step;
    * PCD keeps, per chain, the hidden sample drawn at the end of the last step (the same
      state scikit-learn's BernoulliRBM keeps), so the next update continues that chain.
      With PCD-1 and ``sample_visible`` (its default) this is scikit-learn's update.

    Samples compare a uniform draw from :func:`pycaffe_lite.rng.get_rng` with the
    probability (Gaussian visible samples add standard normal noise to the mean), so
    ``random_seed`` makes training repeatable.  Bottom diffs are set to 0: an RBM is trained
    greedily, and fine-tuning uses the equivalent InnerProduct + Sigmoid net.  In TEST
    phase (or with every lr_mult 0) the layer is a deterministic feature layer: no random
    draws, no chain (a TEST net keeps no persistent chains, whatever its batch size).
    Logistic units are computed as ``0.5 tanh(z / 2) + 0.5`` (no overflow; see
    kernels/sampling.py).  References: Hinton, "Training products of experts by minimizing
    contrastive divergence" (2002); Tieleman, "Training restricted Boltzmann machines using
    approximations to the likelihood gradient" (ICML 2008); Hinton, "A practical guide to
    training restricted Boltzmann machines" (UTML TR 2010-003).
    """

    min_num_bottom = 1
    max_num_bottom = 2
    min_num_top = 1
    max_num_top = 3
    self_trained = True

    # ---------------------------------------------------------------- set-up
    def setup(self, bottom, top) -> None:
        p = self.layer_param.rbm_param
        self.H = int(p.num_hidden)
        if self.H <= 0:
            raise self.config_error("rbm_param.num_hidden must be set to a positive number of hidden units")
        self.cd_k = int(p.cd_k)
        if self.cd_k < 1:
            raise self.config_error(f"rbm_param.cd_k must be at least 1 Gibbs step, got {self.cd_k}")
        self.visible_type = int(p.visible_type)
        self.gaussian = self.visible_type == GAUSSIAN
        self.sample_visible = bool(p.sample_visible) if p.HasField("sample_visible") else bool(p.persistent)
        # chains exist only where the layer trains: a TEST net (often with another batch size)
        # that shares the weights keeps none
        self.persistent = bool(p.persistent) and self.phase == TRAIN
        if any(w != 0 for w in self.layer_param.loss_weight):
            raise self.config_error(
                f"loss_weight {list(self.layer_param.loss_weight)}: an RBM's tops carry no loss (it learns by "
                "contrastive divergence, not from a gradient of its tops); remove loss_weight"
            )
        if len(bottom) == 2 and len(top) < 3:
            raise self.config_error(
                "a second bottom (a held-out batch) is only used for the free-energy gap, top 2; add tops 1 "
                "and 2 or remove the second bottom"
            )
        if len(top) == 3 and len(bottom) < 2:
            raise self.config_error(
                "top 2 (the free-energy gap) compares the data with a held-out batch; give it as a second bottom"
            )
        self.V = bottom[0].count(1)
        if self.V <= 0:
            raise self.shape_error(f"bottom shape {bottom[0].shape} has no visible units")
        N = bottom[0].shape[0] if bottom[0].num_axes else 1
        if self.persistent:
            self.num_chains = int(p.num_chains) or N
            if self.num_chains != N:
                raise self.config_error(
                    f"rbm_param.num_chains is {self.num_chains} but the batch holds {N} items; persistent CD "
                    f"advances one chain per batch item: set num_chains to {N} or leave it 0 (= the batch size)"
                )
            self.chain = np.zeros((self.H, self.num_chains), np.float32)  # unit-major, like _hs
        elif p.num_chains and not p.persistent:
            raise self.config_error(
                f"rbm_param.num_chains ({p.num_chains}) is only used with persistent: true (PCD); CD chains "
                "start at the data, one per batch item"
            )
        gaussian_w = caffe_pb2.FillerParameter(type="gaussian", std=0.01)
        zero = caffe_pb2.FillerParameter(type="constant", value=0.0)
        self.init_param_blobs(
            [(self.H, self.V), (self.V,), (self.H,)],
            [
                p.weight_filler if p.HasField("weight_filler") else gaussian_w,
                p.visible_bias_filler if p.HasField("visible_bias_filler") else zero,
                p.hidden_bias_filler if p.HasField("hidden_bias_filler") else zero,
            ],
        )
        self._G = None  # (H, V) weight statistic P^T Q, made at the first training backward
        self._scratch = None
        self._N = -1
        self._M = -1
        self._stats_ready = False

    def _allocate(self, N: int) -> None:
        H, V = self.H, self.V
        f32 = np.float32
        # Items [:N] belong to the data, [N:] to the model (the chain), so that one product
        # P^T Q = -h_data^T x + h_model^T x_model gives the weight statistic, and PCD computes
        # both hidden layers with one product W [x; x_model]^T.  The hidden units' arrays are
        # unit-major (H, 2N): W x^T reads W as stored and takes half the time of x W^T, for which
        # BLAS packs a transposed copy of W (kernels/sampling.py).
        self._AT = np.empty((H, 2 * N), f32)  # W [x; x_model]^T (no bias); AT[:, :N] feeds F(x)
        self._TT = np.empty(H * 2 * N, f32)   # tanh((AT[:, cols] + c) / 2), contiguous (see _hidden_tanh)
        self._PT = np.empty((H, 2 * N), f32)  # [-h_data, h_model] probabilities, unit-major
        self._Q = np.empty((2 * N, V), f32)   # [x; x_model]
        self._hs = np.empty((H, N), f32)      # sampled hidden states driving a CD chain (unit-major)
        self._uh = np.empty((N, H), f32)      # uniforms for hidden samples
        self._uv = np.empty((N, V), f32)      # uniforms / normals for visible samples
        self._R = np.empty((N, V), f32)       # mean-field reconstruction (top 1)
        self._fe = np.empty(N, np.float64)
        self._N = N
        # Two cores without BLAS's threads (see SPLIT_PRODUCTS): products big enough to pay the
        # hand-over are split in halves of the hidden units (rows of the unit-major outputs) or
        # of the visible units (columns of Q and R).
        if SPLIT_PRODUCTS and available_cpus() >= 2 and N * H * V >= MIN_SPLIT_MACS and min(H, V) >= 2:
            self._hcut, self._vcut = (0, split_point(H)), (1, split_point(V))
        else:
            self._hcut = self._vcut = None

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        N = x.shape[0] if x.num_axes else 1
        V = x.count(1)
        if V != self.V:
            raise self.shape_error(
                f"bottom '{x.name}' shape {x.shape} has {V} visible units per item, but the weights have shape "
                f"{self.blobs[0].shape} ({self.V}); the input size cannot change after set-up"
            )
        if self.persistent and N != self.num_chains:
            raise self.shape_error(
                f"the batch now holds {N} items but there are {self.num_chains} persistent chains; persistent "
                "CD needs a constant batch size"
            )
        if N != self._N:
            self._allocate(N)
            self._stats_ready = False
        top[0].reshape(N, self.H)
        for t in top[1:]:
            t.reshape(())
        if len(bottom) == 2:
            held = bottom[1]
            M = held.shape[0] if held.num_axes else 1
            if held.count(1) != self.V:
                raise self.shape_error(
                    f"held-out bottom '{held.name}' shape {held.shape} has {held.count(1)} visible units per "
                    f"item, but bottom '{x.name}' has {self.V}"
                )
            if M != self._M:
                self._Ah = np.empty((M, self.H), np.float32)
                self._feh = np.empty(M, np.float64)
                self._M = M

    # ---------------------------------------------------------------- forward
    def _range_error(self, blob, lo: float, hi: float) -> DataError:
        return DataError(
            f"{self.describe()}: Bernoulli visible units need data in [0, 1], but bottom '{blob.name}' holds "
            f"values from {lo:g} to {hi:g}; scale the data (e.g. transform_param {{ scale: 0.00390625 }} "
            "for 8-bit pixels) or use rbm_param { visible_type: GAUSSIAN } for real-valued data"
        )

    def _check_range(self, blob, x: np.ndarray) -> None:
        if self.gaussian or x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise self._range_error(blob, lo, hi)

    def _tanh_half(self, a: np.ndarray, bias: np.ndarray, t: np.ndarray) -> None:
        """``t = tanh((a + bias) / 2)``, so that ``sigmoid(a + bias) = 0.5 t + 0.5`` (item-major
        ``a``: a bias per column)."""
        K.add_bias_half(a, bias, t)
        np.tanh(t, out=t)

    def _hidden_tanh(self, cols: slice) -> np.ndarray:
        """``tanh((AT[:, cols] + c) / 2)`` (unit-major: a bias per row) in a contiguous (H, columns)
        buffer: NumPy's tanh takes 1.8 us on 10,000 contiguous values, 6 us on a column slice."""
        a = self._AT[:, cols]
        t = self._TT[:a.size].reshape(a.shape)
        K.add_row_bias_half(a, self.blobs[2].data, t)
        np.tanh(t, out=t)
        return t

    def _product(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, cut, meanwhile=None) -> None:
        """``out = a @ b``: whole, or (``cut`` = (axis, k), see SPLIT_PRODUCTS) as two halves at
        once, rows ``:k`` / ``k:`` of ``out`` (axis 0) or its columns (axis 1), one of them on the
        worker thread of pycaffe_lite/_split.py, when that has been faster.  Each half writes only
        its own part of ``out``, so the numbers do not depend on the split; the element-wise work
        runs afterwards, here, on the whole arrays.  ``meanwhile()`` runs here first (while the
        worker already computes its half): work that neither reads ``out`` nor writes ``a``/``b``."""
        if cut is not None:
            k = cut[1]
            if cut[0] == 0:
                halves = (a[:k], b, out[:k]), (a[k:], b, out[k:])
            else:
                halves = (a, b[:, :k], out[:, :k]), (a, b[:, k:], out[:, k:])
            matmul_halves(*halves, (a, b, out), meanwhile)
        else:
            if meanwhile is not None:
                meanwhile()
            np.matmul(a, b, out=out)

    def _draw_visible_noise(self) -> None:
        if self.gaussian:
            get_rng().standard_normal(out=self._uv, dtype=np.float32)
        else:
            get_rng().random(out=self._uv, dtype=np.float32)

    def _visible(self, v: np.ndarray, sample: bool) -> None:
        """``v`` holds ``h W``: make it P(x|h) / E[x|h], or a sample of x|h (with the noise drawn
        by :meth:`_draw_visible_noise`)."""
        b = self.blobs[1].data
        if self.gaussian:
            np.add(v, b, out=v)
            if sample:
                np.add(v, self._uv, out=v)
            return
        self._tanh_half(v, b, v)
        if sample:
            K.sigmoid_from_tanh_sample(v, self._uv, v, v)
        else:
            K.sigmoid_from_tanh(v, v)

    def _h_model(self, rows: slice, sample_next: bool) -> None:
        """h_model = P(h | rows of Q) (the data too at PCD's first step); the chain's next hidden
        sample if ``sample_next``; at PCD's first step also the data's P(h|x)."""
        N = self._N
        model = slice(N, 2 * N)
        self._product(self.blobs[0].data, self._Q[rows].T, self._AT[:, rows], self._hcut)
        T = self._hidden_tanh(rows)
        Tm = T[:, T.shape[1] - N:]  # the model's columns (all of T but at PCD's first step)
        if rows.start == 0:
            K.hidden_data_t(T[:, :N], self._top, self._PT[:, :N])
        if sample_next:
            K.sigmoid_from_tanh_sample_t(Tm, self._uh, self._PT[:, model], self._hnext)
        else:
            K.sigmoid_from_tanh(Tm, self._PT[:, model])

    def forward(self, bottom, top) -> None:
        with SerialBlas():
            self._forward(bottom, top)

    def _forward(self, bottom, top) -> None:
        N = self._N
        x = bottom[0].data.reshape(N, self.V)

        def load_input() -> None:  # Q[:N] = x, checked (run while the first product starts)
            lo, hi = K.copy_min_max(x, self._Q[:N])
            if not self.gaussian and not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
                raise self._range_error(bottom[0], float(lo), float(hi))

        W = self.blobs[0].data
        c = self.blobs[2].data
        self._x, self._top = x, top[0].data.reshape(N, self.H)
        self._stats_ready = self.phase == TRAIN and any(self.param_propagate_down)
        if not self._stats_ready:
            data = slice(0, N)
            self._product(W, x.T, self._AT[:, data], self._hcut, load_input)
            K.sigmoid_from_tanh_t(self._hidden_tanh(data), self._top)
        elif self.persistent:
            self._pcd_chain(load_input)
        else:
            self._cd_chain(load_input)
        # The statistics live in PT and Q, not in the top: a layer above may work in place on it.
        if len(top) > 1:
            self._product(self._top, W, self._R, self._vcut)
            self._visible(self._R, sample=False)
            top[1].data[...] = K.squared_error_sum(x, self._R) / N
        if len(top) > 2:
            held_blob = bottom[1]
            xh = held_blob.data.reshape(self._M, self.V)
            self._check_range(held_blob, xh)
            np.matmul(xh, W.T, out=self._Ah)
            b = self.blobs[1].data
            K.free_energy_rows(x, self._AT[:, :N].T, b, c, self.gaussian, self._fe)
            K.free_energy_rows(xh, self._Ah, b, c, self.gaussian, self._feh)
            top[2].data[...] = self._fe.mean() - self._feh.mean()
        self._x = self._top = None

    def _sample_uniforms(self) -> np.ndarray:
        get_rng().random(out=self._uh, dtype=np.float32)
        return self._uh

    def _v_model(self, meanwhile=None) -> None:
        """x_model = P(x|h) (sampled if sample_visible) from the chain's hidden states."""
        if self.sample_visible:
            self._draw_visible_noise()
        q = self._Q[self._N:]
        self._product(self._hsrc.T, self.blobs[0].data, q, self._vcut, meanwhile)
        self._visible(q, self.sample_visible)

    def _cd_chain(self, load_input) -> None:
        """CD-k: h_data = P(h|x) (top and statistics) and h0 ~ h_data; then k steps of
        x_model = P(x|h) (sampled if sample_visible), h_model = P(h|x_model), h ~ h_model."""
        N = self._N
        data = slice(0, N)

        def meanwhile() -> None:
            load_input()
            self._sample_uniforms()

        self._product(self.blobs[0].data, self._x.T, self._AT[:, data], self._hcut, meanwhile)
        K.hidden_data_sample_t(self._hidden_tanh(data), self._uh, self._top, self._PT[:, data], self._hs)
        self._hsrc = self._hnext = self._hs
        for step in range(self.cd_k):
            self._v_model()
            sample_next = step + 1 < self.cd_k
            if sample_next:
                self._sample_uniforms()
            self._h_model(slice(N, 2 * N), sample_next)

    def _pcd_chain(self, load_input) -> None:
        """PCD-k: each step x_model = P(x|h) from the chains' hidden states, h_model =
        P(h|x_model), chains <- h ~ h_model.  The first step computes the data's hidden
        probabilities in the same product: W [x; x_model]^T."""
        N = self._N
        self._hsrc = self._hnext = self.chain
        for step in range(self.cd_k):
            self._v_model(load_input if step == 0 else None)
            self._sample_uniforms()
            self._h_model(slice(0, 2 * N) if step == 0 else slice(N, 2 * N), True)

    # ---------------------------------------------------------------- backward
    def backward(self, top, propagate_down, bottom) -> None:
        for i, b in enumerate(bottom):
            if propagate_down[i]:
                b.diff[...] = 0  # greedy training: nothing flows to the layers below
        if not self._stats_ready:
            return
        with SerialBlas():
            self._backward_params()

    def _backward_params(self) -> None:
        N = self._N
        inv_n = np.float32(1.0 / N)
        W, b, c = self.blobs
        if self._scratch is None:
            self._scratch = np.empty(max(self.H, self.V), np.float64)

        def bias_diffs() -> None:  # run while the weight statistic's product starts
            if self.param_propagate_down[1]:
                K.signed_column_sums_add(self._Q, N, inv_n, self._scratch, b.diff)
            if self.param_propagate_down[2]:
                K.row_sums_add(self._PT, inv_n, c.diff)

        if not self.param_propagate_down[0]:
            bias_diffs()
            return
        # dW += (-h_data^T x + h_model^T x_model) / N = P^T Q / N: straight into the diff by BLAS
        # (beta 1) when NumPy's sgemm can be called directly, else through G
        k = self._hcut[1] if self._hcut is not None else 0
        P, Q, dW = self._PT, self._Q, W.diff
        if k and gemm_halves((P[:k], Q, dW[:k]), (P[k:], Q, dW[k:]), (P, Q, dW), float(inv_n), 1.0, bias_diffs):
            return
        if self._G is None:
            self._G = np.empty((self.H, self.V), np.float32)
        self._product(P, Q, self._G, self._hcut, bias_diffs)
        K.add_scaled(self._G.reshape(-1), inv_n, dW.reshape(-1))

    # ---------------------------------------------------------------- state
    def get_state(self) -> list[np.ndarray]:
        """PCD: ``[hidden states of the persistent chains (num_chains, H)]``; CD: ``[]``."""
        return [self.chain.T.copy()] if self.persistent else []

    def set_state(self, arrays) -> None:
        """Restore the persistent chains; saved chains are ignored (with a warning) by a CD layer,
        so a run may switch from PCD to CD when it resumes."""
        shapes = [tuple(np.shape(a)) for a in arrays]
        if not self.persistent:
            if shapes:
                logger.warning("%s: ignoring %d saved persistent chains: the layer trains by CD now",
                               self.describe(), shapes[0][0] if shapes[0] else 0)
            return
        expected = [(self.num_chains, self.H)]
        if shapes != expected:
            raise DataError(
                f"{self.describe()}: the saved persistent chains have shapes {shapes}, but the layer keeps "
                f"{expected} (num_chains x num_hidden); was the snapshot written with another batch size or "
                "num_hidden?"
            )
        self.chain[...] = np.asarray(arrays[0]).T
