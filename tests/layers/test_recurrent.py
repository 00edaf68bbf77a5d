"""RNN, LSTM, GRU, LSTMUnit, SequenceIndicator: Caffe's blob layout, forward against float64
references written step by step from Caffe's unrolled nets (and Cho et al. for the GRU),
gradients through time (cont resets mid-batch, static input, peepholes, exposed states), the
carried state, and the errors."""

import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import as_blobs, backward, forward, make_layer, setup_layer

GRADIENT_CHECKED = {"RNN", "LSTM", "GRU", "LSTMUnit"}

T, N, I, H, S = 4, 2, 3, 3, 2
#: stream 1 starts a new sequence at t = 1, stream 0 at t = 3 (and both at t = 0)
CONT = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
#: with exposed states: stream 0 continues from h_0 at t = 0
CONT_EXPOSED = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], np.float32)
STATES = {"RNN": ("h",), "LSTM": ("h", "c"), "GRU": ("h",)}


def recurrent(type_: str, extra: str = "", num_output: int = H) -> str:
    fill = "weight_filler { type: 'uniform' min: -0.6 max: 0.6 } bias_filler { type: 'uniform' min: -0.5 max: 0.5 }"
    return f'name: "r" type: "{type_}" recurrent_param {{ num_output: {num_output} {fill} {extra} }}'


def build(type_: str, extra: str = "", static: bool = False, seed: int = 0, cont=None):
    """The layer with random x (and x_static / initial states) and its tops."""
    exposed = "expose_hidden: true" in extra
    rs = np.random.default_rng(seed)
    bottoms = [rs.uniform(-1, 1, (T, N, I)).astype(np.float32)]
    bottoms.append(CONT_EXPOSED if exposed else CONT if cont is None else cont)
    if static:
        bottoms.append(rs.uniform(-1, 1, (N, S)).astype(np.float32))
    if exposed:
        bottoms += [rs.uniform(-1, 1, (1, N, H)).astype(np.float32) for _ in STATES[type_]]
    num_top = 1 + (len(STATES[type_]) if exposed else 0)
    return setup_layer(recurrent(type_, extra), bottoms, num_top=num_top, seed=seed)


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def f64(blob_list):
    return [b.data.astype(np.float64) for b in blob_list]


def reference(layer, bottom):
    """Step by step in float64; returns the outputs (T, N, H) and the final states."""
    x = bottom[0].data.astype(np.float64).reshape(T, N, -1)
    cont = bottom[1].data.astype(np.float64)[:, :, None]
    blobs = f64(layer.blobs)
    Wx, b = blobs[0], blobs[1]
    rest = blobs[2:]
    static = 0.0
    if layer.static_input:
        static = bottom[2].data.astype(np.float64).reshape(N, -1) @ rest.pop(0).T
    nstates = len(layer.state_names)
    if layer.expose_hidden:
        state = [bottom[layer.state_bottom0 + j].data[0].astype(np.float64) for j in range(nstates)]
    else:
        state = [layer._state[j].astype(np.float64) * 0 for j in range(nstates)]  # cont[0] = 0 in these tests
    outs = []
    for t in range(T):
        a = x[t] @ Wx.T + b + static
        if layer.type == "RNN":
            W_hh, W_ho, b_o = rest
            hp = cont[t] * state[0]  # Caffe's h_conted = cont_t * h_{t-1}
            a = a + hp @ W_hh.T
            h = sig(a) if layer.sigmoid else np.tanh(a)
            state = [h]
            outs.append(np.tanh(h @ W_ho.T + b_o))
        elif layer.type == "LSTM":
            W_hc = rest[0]
            a = a + (cont[t] * state[0]) @ W_hc.T
            ai, af, ao, ag = np.split(a, 4, axis=1)
            c_prev = state[1]
            if layer.peephole:
                vi, vf, vo = rest[1:]
                cc = cont[t] * c_prev
                i, f, g = sig(ai + vi * cc), sig(af + vf * cc), np.tanh(ag)
                c = f * cc + i * g
                o = sig(ao + vo * c)
            else:  # Caffe's LSTMUnit exactly: f = cont * s(a_f), c = f c_prev + i g
                i, f, o, g = sig(ai), cont[t] * sig(af), sig(ao), np.tanh(ag)
                c = f * c_prev + i * g
            h = o * np.tanh(c)
            state = [h, c]
            outs.append(h)
        else:  # GRU, Cho et al. 2014
            W_h = rest[0]
            hp = cont[t] * state[0]
            az, ar, ac = np.split(a, 3, axis=1)
            z = sig(az + hp @ W_h[:H].T)
            r = sig(ar + hp @ W_h[H:2 * H].T)
            cand = np.tanh(ac + (r * hp) @ W_h[2 * H:].T)
            h = z * hp + (1 - z) * cand
            state = [h]
            outs.append(h)
    return np.stack(outs), state


def randomize_peepholes(layer, seed=3):
    rs = np.random.default_rng(seed)
    for b in layer.blobs[-3:]:
        b.data[...] = rs.uniform(-0.8, 0.8, b.shape)


# ---------------------------------------------------------------------------- layout
@pytest.mark.parametrize("type_,extra,static,shapes", [
    ("RNN", "", False, [(H, I), (H,), (H, H), (H, H), (H,)]),
    ("RNN", "", True, [(H, I), (H,), (H, S), (H, H), (H, H), (H,)]),
    ("LSTM", "", False, [(4 * H, I), (4 * H,), (4 * H, H)]),
    ("LSTM", "", True, [(4 * H, I), (4 * H,), (4 * H, S), (4 * H, H)]),
    ("LSTM", "peephole: true", False, [(4 * H, I), (4 * H,), (4 * H, H), (H,), (H,), (H,)]),
    ("GRU", "", True, [(3 * H, I), (3 * H,), (3 * H, S), (3 * H, H)]),
])
def test_caffe_blob_layout_and_top_shapes(type_, extra, static, shapes):
    layer, _, top = build(type_, extra, static)
    assert [b.shape for b in layer.blobs] == shapes
    assert top[0].shape == (T, N, H)
    if "peephole" in extra:
        assert all(np.all(b.data == 0) for b in layer.blobs[-3:])  # start as Caffe's LSTM


def test_exposed_state_tops_and_input_flattened_from_axis_2():
    layer, _, top = setup_layer(recurrent("LSTM", "expose_hidden: true"),
                                [(T, N, 2, 2), CONT_EXPOSED, (1, N, H), (1, N, H)], num_top=3)
    assert layer.blobs[0].shape == (4 * H, 4)
    assert [t.shape for t in top] == [(T, N, H), (1, N, H), (1, N, H)]


# ---------------------------------------------------------------------------- forward
FORWARD_CASES = [
    ("RNN", "", False),
    ("RNN", "nonlinearity: SIGMOID", False),
    ("RNN", "expose_hidden: true", True),
    ("LSTM", "", False),
    ("LSTM", "", True),
    ("LSTM", "peephole: true", False),
    ("LSTM", "peephole: true expose_hidden: true", True),
    ("GRU", "", False),
    ("GRU", "expose_hidden: true", True),
]


@pytest.mark.parametrize("type_,extra,static", FORWARD_CASES)
def test_forward_matches_float64_reference(type_, extra, static):
    layer, bottom, top = build(type_, extra, static)
    if "peephole" in extra:
        randomize_peepholes(layer)
    forward(layer, bottom, top)
    outs, final = reference(layer, bottom)
    np.testing.assert_allclose(top[0].data, outs, rtol=1e-5, atol=2e-6)
    if "expose_hidden" in extra:
        for j, state in enumerate(final):
            np.testing.assert_allclose(top[1 + j].data[0], state, rtol=1e-5, atol=2e-6)


def test_cont_zero_resets_the_state():
    """A stream whose cont is 0 at t gives the same outputs from t on as a fresh sequence."""
    layer, bottom, top = build("LSTM")
    forward(layer, bottom, top)
    stream1_from_t1 = top[0].data[1:, 1].copy()
    x_alone = bottom[0].data[1:, 1:2].copy()
    alone, b2, t2 = setup_layer(recurrent("LSTM"), [x_alone, CONT[1:, 1:2]])
    alone.blobs = layer.blobs
    forward(alone, b2, t2)
    np.testing.assert_allclose(t2[0].data[:, 0], stream1_from_t1, rtol=1e-6, atol=1e-7)


def test_state_carries_to_the_next_forward_without_expose_hidden():
    """Caffe's RecurrentLayer starts each forward from the last one's final state."""
    carried, bottom, top = build("LSTM", cont=np.ones((T, N), np.float32))
    forward(carried, bottom, top)
    first = top[0].data.copy()
    h_T, c_T = top[0].data[-1].copy(), carried._state[1].copy()
    np.testing.assert_array_equal(carried.get_state()[0][0], h_T)
    forward(carried, bottom, top)
    second = top[0].data.copy()
    assert not np.allclose(first, second)
    exposed, b2, t2 = build("LSTM", "expose_hidden: true")
    exposed.blobs = carried.blobs
    b2[0].data[...] = bottom[0].data
    b2[1].data[...] = 1
    b2[2].data[0], b2[3].data[0] = h_T, c_T
    forward(exposed, b2, t2)
    np.testing.assert_allclose(t2[0].data, second, rtol=1e-6, atol=1e-7)
    # a solverstate restores the carried state
    carried.set_state([np.zeros((2, N, H), np.float32)])
    forward(carried, bottom, top)
    np.testing.assert_allclose(top[0].data, first, rtol=1e-6, atol=1e-7)


def test_time_steps_and_batch_may_change():
    layer, bottom, top = build("GRU")
    bottom[0].reshape((6, 3, I))
    bottom[1].reshape((6, 3))
    bottom[1].data[...] = 1
    bottom[1].data[0] = 0
    forward(layer, bottom, top)
    assert top[0].shape == (6, 3, H) and layer.get_state()[0].shape == (1, 3, H)


# ---------------------------------------------------------------------------- gradients
GRADIENT_CASES = [
    ("RNN", "", False),
    ("RNN", "nonlinearity: SIGMOID", True),
    ("RNN", "expose_hidden: true", True),
    ("LSTM", "", False),
    ("LSTM", "peephole: true", True),
    ("LSTM", "expose_hidden: true", False),
    ("LSTM", "peephole: true expose_hidden: true", True),
    ("GRU", "", False),
    ("GRU", "expose_hidden: true", True),
]


@pytest.mark.parametrize("type_,extra,static", GRADIENT_CASES)
def test_gradient_through_time(type_, extra, static):
    layer, bottom, top = build(type_, extra, static)
    if "peephole" in extra:
        randomize_peepholes(layer)
    check = [i for i in range(len(bottom)) if i != 1]  # every bottom but cont
    check_gradient(layer, bottom, top, check_bottom=check, setup=False)


def test_lstm_unit_gradient():
    rs = np.random.default_rng(0)
    bottoms = [rs.uniform(-1, 1, (1, 3, 2)), rs.uniform(-2, 2, (1, 3, 8)), np.array([[1, 0, 1]], np.float32)]
    layer, bottom, top = setup_layer('name: "unit" type: "LSTMUnit"', [np.asarray(b, np.float32) for b in bottoms],
                                     num_top=2)
    check_gradient(layer, bottom, top, check_bottom=[0, 1], setup=False)


def test_param_diffs_accumulate_and_bottom_diffs_are_assigned():
    layer, bottom, top = build("LSTM", "peephole: true expose_hidden: true", static=True)
    randomize_peepholes(layer)
    forward(layer, bottom, top)
    backward(layer, bottom, top)
    params = [b.diff.copy() for b in layer.blobs]
    bottoms = [b.diff.copy() for b in bottom]
    layer.run_backward(top, [True, False, True, True, True], bottom)
    for b, first in zip(layer.blobs, params):
        np.testing.assert_allclose(b.diff, 2 * first, rtol=1e-5, atol=1e-7)
    for i in (0, 2, 3, 4):
        np.testing.assert_array_equal(bottom[i].diff, bottoms[i])


def test_propagate_down_and_param_propagate_down_are_honoured():
    layer, bottom, top = build("RNN", static=True)
    forward(layer, bottom, top)
    for b in bottom:
        b.diff[...] = 7
    layer.param_propagate_down = [True, True, False, True, False, True]
    backward(layer, bottom, top, propagate_down=[False, False, False])
    assert all(np.all(b.diff == 7) for b in bottom)
    assert np.all(layer.blobs[2].diff == 0) and np.all(layer.blobs[4].diff == 0)
    assert np.any(layer.blobs[3].diff != 0) and np.any(layer.blobs[0].diff != 0)


def test_cont_gets_a_zero_gradient_when_asked():
    layer, bottom, top = build("GRU")
    forward(layer, bottom, top)
    bottom[1].diff[...] = 5
    backward(layer, bottom, top, propagate_down=[True, True])
    assert np.all(bottom[1].diff == 0)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


# ---------------------------------------------------------------------------- LSTMUnit
def test_lstm_unit_forward_is_caffes_step():
    rs = np.random.default_rng(1)
    c_prev = rs.uniform(-1, 1, (1, 3, 2)).astype(np.float32)
    x = rs.uniform(-2, 2, (1, 3, 8)).astype(np.float32)
    cont = np.array([[1, 0, 1]], np.float32)
    layer, bottom, top = setup_layer('name: "unit" type: "LSTMUnit"', [c_prev, x, cont], num_top=2)
    forward(layer, bottom, top)
    xi, xf, xo, xg = np.split(x[0].astype(np.float64), 4, axis=1)
    f = cont[0][:, None] * sig(xf)
    c = f * c_prev[0] + sig(xi) * np.tanh(xg)
    np.testing.assert_allclose(top[0].data[0], c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(top[1].data[0], sig(xo) * np.tanh(c), rtol=1e-5, atol=1e-6)


def test_lstm_equals_unrolled_lstm_units():
    """The LSTM layer is Caffe's unrolled net: x_transform, h_conted, W_hc product, LSTMUnit."""
    layer, bottom, top = build("LSTM")
    forward(layer, bottom, top)
    W_xc, b_c, W_hc = (b.data for b in layer.blobs)
    unit = make_layer('name: "unit" type: "LSTMUnit"')
    h = np.zeros((1, N, H), np.float32)
    c = np.zeros((1, N, H), np.float32)
    ub = as_blobs([c, np.zeros((1, N, 4 * H), np.float32), np.zeros((1, N), np.float32)])
    ut = [Blob(), Blob()]
    unit.set_up(ub, ut)
    for t in range(T):
        ub[0].data[...] = c
        ub[1].data[0] = bottom[0].data[t] @ W_xc.T + b_c + (CONT[t][:, None] * h[0]) @ W_hc.T
        ub[2].data[0] = CONT[t]
        forward(unit, ub, ut)
        c, h = ut[0].data.copy(), ut[1].data.copy()
        np.testing.assert_allclose(top[0].data[t], h[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- SequenceIndicator
def test_sequence_indicator():
    layer, bottom, top = setup_layer('name: "seq" type: "SequenceIndicator"', [(5, 3, 2)])
    forward(layer, bottom, top)
    expected = np.ones((5, 3), np.float32)
    expected[0] = 0
    np.testing.assert_array_equal(top[0].data, expected)
    with pytest.raises(ShapeError, match=r"layer 'seq' \(SequenceIndicator\): x \(bottom\[0\]\) must be \(T, N"):
        setup_layer('name: "seq" type: "SequenceIndicator"', [(5,)])


# ---------------------------------------------------------------------------- errors
def test_cont_shape_must_match_x():
    with pytest.raises(ShapeError, match=r"layer 'r' \(LSTM\): cont \(bottom\[1\]\) has shape \(3, 2\) but must be "
                                         r"\(T, N\) = \(4, 2\) to match x \(bottom\[0\]\) of shape \(4, 2, 3\)"):
        setup_layer(recurrent("LSTM"), [(T, N, I), (3, 2)])


def test_zero_time_steps():
    with pytest.raises(ShapeError, match=r"layer 'r' \(GRU\): x \(bottom\[0\]\) has shape \(0, 2, 3\): T = 0 time "
                                         r"steps and N = 2 streams; both must be at least 1"):
        setup_layer(recurrent("GRU"), [(0, N, I), (0, N)])


@pytest.mark.parametrize("type_", ["RNN", "LSTM", "GRU"])
def test_num_output_must_be_positive(type_):
    with pytest.raises(NetConfigError, match=rf"layer 'r' \({type_}\): recurrent_param.num_output must be set to a "
                                             r"positive number \(the hidden size\)"):
        setup_layer(recurrent(type_, num_output=0), [(T, N, I), CONT])


@pytest.mark.parametrize("type_", ["RNN", "GRU"])
def test_peephole_only_on_lstm(type_):
    with pytest.raises(NetConfigError, match=rf"layer 'r' \({type_}\): recurrent_param.peephole applies to LSTM "
                                             r"layers only"):
        setup_layer(recurrent(type_, "peephole: true"), [(T, N, I), CONT])


@pytest.mark.parametrize("type_", ["LSTM", "GRU"])
def test_nonlinearity_only_on_rnn(type_):
    with pytest.raises(NetConfigError, match=rf"layer 'r' \({type_}\): recurrent_param.nonlinearity applies to RNN "
                                             r"layers only"):
        setup_layer(recurrent(type_, "nonlinearity: SIGMOID"), [(T, N, I), CONT])
    setup_layer(recurrent(type_, "nonlinearity: TANH"), [(T, N, I), CONT])  # the default is fine


def test_bottom_and_top_counts():
    with pytest.raises(NetConfigError, match=r"layer 'r' \(LSTM\): takes bottoms x, cont, an optional x_static, then "
                                             r"the initial states h_0, c_0 \(expose_hidden\): 4 or 5 bottoms, got 3"):
        setup_layer(recurrent("LSTM", "expose_hidden: true"), [(T, N, I), CONT, (1, N, H)], num_top=3)
    with pytest.raises(NetConfigError, match=r"layer 'r' \(RNN\): takes 1 tops \(one \(the output\)\), got 2; set "
                                             r"recurrent_param \{ expose_hidden: true \} for the final states"):
        setup_layer(recurrent("RNN"), [(T, N, I), CONT], num_top=2)
    with pytest.raises(NetConfigError, match=r"layer 'r' \(LSTM\): takes 3 tops \(the output and the final states "
                                             r"h_T, c_T\), got 1"):
        setup_layer(recurrent("LSTM", "expose_hidden: true"), [(T, N, I), CONT, (1, N, H), (1, N, H)])


def test_x_needs_three_axes_and_a_fixed_input_size():
    with pytest.raises(ShapeError, match=r"layer 'r' \(RNN\): x \(bottom\[0\]\) must be \(T, N, \.\.\.\) with at "
                                         r"least 3 axes .* got \(4, 2\)"):
        setup_layer(recurrent("RNN"), [(T, N), CONT])
    layer, bottom, top = build("RNN")
    bottom[0].reshape((T, N))
    with pytest.raises(ShapeError, match=r"layer 'r' \(RNN\): x \(bottom\[0\]\) must be \(T, N, \.\.\.\) with at "
                                         r"least 3 axes .* got \(4, 2\)"):
        forward(layer, bottom, top)
    bottom[0].reshape((T, N, I + 1))
    with pytest.raises(ShapeError, match=r"layer 'r' \(RNN\): x \(bottom\[0\]\) has shape \(4, 2, 4\), 4 inputs per "
                                         r"step, but the weights expect 3; the input size cannot change"):
        forward(layer, bottom, top)


def test_exposed_state_and_static_shapes():
    with pytest.raises(ShapeError, match=r"layer 'r' \(LSTM\): initial state c_0 \(bottom\[3\]\) has shape "
                                         r"\(1, 2, 4\) but must be \(1, N, num_output\) = \(1, 2, 3\)"):
        setup_layer(recurrent("LSTM", "expose_hidden: true"), [(T, N, I), CONT, (1, N, H), (1, N, H + 1)],
                    num_top=3)
    with pytest.raises(ShapeError, match=r"layer 'r' \(GRU\): x_static \(bottom\[2\]\) has shape \(3, 2\) but must "
                                         r"be \(N, \.\.\.\) with N = 2"):
        layer, bottom, top = build("GRU", static=True)
        bottom[2].reshape((3, S))
        forward(layer, bottom, top)


def test_x_static_needs_a_stream_axis():
    with pytest.raises(ShapeError, match=r"layer 'r' \(GRU\): x_static \(bottom\[2\]\) must be \(N, \.\.\.\)"):
        setup_layer(recurrent("GRU"), [(T, N, I), CONT, Blob(())])


def test_lstm_unit_shape_errors():
    unit = 'name: "unit" type: "LSTMUnit"'
    with pytest.raises(ShapeError, match=r"layer 'unit' \(LSTMUnit\): c_prev \(bottom\[0\]\) must be \(1, N, H\), "
                                         r"got \(2, 3, 2\)"):
        setup_layer(unit, [(2, 3, 2), (1, 3, 8), (1, 3)], num_top=2)
    with pytest.raises(ShapeError, match=r"layer 'unit' \(LSTMUnit\): x \(bottom\[1\]\) has shape \(1, 3, 6\) but "
                                         r"must be \(1, N, 4H\) = \(1, 3, 8\)"):
        setup_layer(unit, [(1, 3, 2), (1, 3, 6), (1, 3)], num_top=2)
    with pytest.raises(ShapeError, match=r"layer 'unit' \(LSTMUnit\): cont \(bottom\[2\]\) has shape \(3,\) but must "
                                         r"be \(1, N\) = \(1, 3\)"):
        setup_layer(unit, [(1, 3, 2), (1, 3, 8), (3,)], num_top=2)


# ---------------------------------------------------------------------------- Caffe files
CAFFE_NET = """
name: "caffe_lstm"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 3 } } }
layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 4 dim: 2 } } }
layer {
  name: "lstm1" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
  recurrent_param { num_output: 3 weight_filler { type: "uniform" min: -0.1 max: 0.1 } }
}
"""


def test_a_caffemodel_in_caffes_layout_loads(tmp_path):
    """Caffe stores an LSTM's blobs as W_xc (4H, I), b_c (4H,), W_hc (4H, H) under the layer's name."""
    from pycaffe_lite.net import Net
    from pycaffe_lite.proto import caffe_pb2

    (tmp_path / "net.prototxt").write_text(CAFFE_NET)
    rs = np.random.default_rng(5)
    arrays = [rs.uniform(-0.5, 0.5, s).astype(np.float32) for s in [(12, 3), (12,), (12, 3)]]
    model = caffe_pb2.NetParameter(name="caffe_lstm")
    lp = model.layer.add(name="lstm1", type="LSTM")
    for a in arrays:
        bp = lp.blobs.add()
        bp.shape.dim.extend(a.shape)
        bp.data.extend(a.ravel().tolist())
    (tmp_path / "w.caffemodel").write_bytes(model.SerializeToString())
    net = Net(str(tmp_path / "net.prototxt"), phase=1, weights=str(tmp_path / "w.caffemodel"))
    for blob, a in zip(net.params["lstm1"], arrays):
        np.testing.assert_array_equal(blob.data, a)
    x = rs.uniform(-1, 1, (T, N, I)).astype(np.float32)
    h = net.forward(x=x, cont=CONT)["h"]
    layer = net.layer_dict["lstm1"]
    expected, _ = reference(layer, as_blobs([x, CONT]))
    np.testing.assert_allclose(h, expected, rtol=1e-5, atol=2e-6)
