"""Convolution: shapes, forward against a float64 reference, gradients, errors."""
import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.layers.convolution import ConvolutionLayer
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.testing import check_gradient

GRADIENT_CHECKED = {"Convolution"}


def make(text: str) -> ConvolutionLayer:
    lp = text_format.Parse('name: "conv" type: "Convolution" ' + text, caffe_pb2.LayerParameter())
    return ConvolutionLayer(lp)


def blob(shape, seed=0):
    b = Blob(shape, name="x")
    b.data[...] = np.random.default_rng(seed).normal(size=shape)
    return b


def reference(x, w, b, stride, pad, dil, group):
    N, _, H, W = x.shape
    O, Cg, kh, kw = w.shape
    sh, sw = stride
    ph, pw = pad
    dh, dw = dil
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((N, O, OH, OW))
    Og = O // group
    for o in range(O):
        g = o // Og
        for i in range(OH):
            for j in range(OW):
                patch = xp[:, g * Cg:(g + 1) * Cg, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + (b[o] if b is not None else 0)
    return y


@pytest.mark.parametrize(
    "text,shape,stride,pad,dil,group",
    [
        ("convolution_param { num_output: 4 kernel_size: 3 }", (2, 3, 6, 5), (1, 1), (0, 0), (1, 1), 1),
        ("convolution_param { num_output: 4 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 }", (2, 2, 7, 5), (2, 2), (1, 1), (1, 1), 1),
        ("convolution_param { num_output: 4 kernel_size: 3 dilation: 2 pad_h: 2 pad_w: 1 stride_h: 1 stride_w: 2 group: 2 }",
         (1, 4, 7, 6), (1, 2), (2, 1), (2, 2), 2),
        ("convolution_param { num_output: 1 kernel_size: 1 bias_term: false }", (1, 1, 1, 1), (1, 1), (0, 0), (1, 1), 1),
    ],
)
def test_forward_matches_reference(text, shape, stride, pad, dil, group):
    layer = make(text.replace("}", " weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' } }"))
    x, top = blob(shape), Blob()
    layer.set_up([x], [top])
    layer.run_forward([x], [top])
    b = layer.blobs[1].data if len(layer.blobs) > 1 else None
    ref = reference(x.data, layer.blobs[0].data.astype(np.float64), b, stride, pad, dil, group)
    assert top.shape == ref.shape
    np.testing.assert_allclose(top.data, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "text,shape",
    [
        ("convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 1 }", (2, 2, 5, 5)),
        ("convolution_param { num_output: 4 kernel_size: 2 dilation: 2 group: 2 }", (2, 4, 5, 4)),
    ],
)
def test_gradient(text, shape):
    layer = make(text.replace("}", " weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' } }"))
    x, top = blob(shape, 3), Blob()
    assert check_gradient(layer, [x], [top]) > 0


def test_two_bottoms_share_weights_and_accumulate():
    layer = make("convolution_param { num_output: 2 kernel_size: 2 weight_filler { type: 'gaussian' } }")
    x1, x2, t1, t2 = blob((1, 1, 3, 3), 1), blob((1, 1, 3, 3), 2), Blob(), Blob()
    assert check_gradient(layer, [x1, x2], [t1, t2]) > 0


def test_channel_mismatch_names_layer_and_shapes():
    layer = make("convolution_param { num_output: 2 kernel_size: 2 }")
    x, top = blob((1, 3, 4, 4)), Blob()
    layer.set_up([x], [top])
    x.reshape(1, 2, 4, 4)
    with pytest.raises(ShapeError, match=r"layer 'conv' \(Convolution\).*\(1, 2, 4, 4\).*\(N, 3, H, W\)"):
        layer.run_forward([x], [top])


def test_kernel_too_big_and_bad_group():
    with pytest.raises(ShapeError, match="too small"):
        make("convolution_param { num_output: 2 kernel_size: 5 }").set_up([blob((1, 1, 3, 3))], [Blob()])
    with pytest.raises(NetConfigError, match="group 2 must divide"):
        make("convolution_param { num_output: 3 kernel_size: 1 group: 2 }").set_up([blob((1, 2, 3, 3))], [Blob()])


def test_pad_h_alone_is_valid_but_stride_h_alone_is_not():
    layer = make("convolution_param { num_output: 2 kernel_size: 3 pad_h: 1 }")
    top = Blob()
    layer.set_up([blob((1, 1, 4, 4))], [top])
    assert top.shape == (1, 2, 4, 2)
    with pytest.raises(NetConfigError, match="stride_h and stride_w must be given together"):
        make("convolution_param { num_output: 2 kernel_size: 3 stride_h: 2 }").set_up([blob((1, 1, 4, 4))], [Blob()])


def test_weights_of_another_4d_layout_are_refused():
    from pycaffe_lite.proto import caffe_pb2 as pb

    lp = text_format.Parse('name: "conv" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 }',
                           pb.LayerParameter())
    lp.blobs.add().shape.dim.extend([3, 2, 3, 3])  # same count as (2, 3, 3, 3), another layout
    lp.blobs[0].data.extend([0.0] * 54)
    lp.blobs.add().shape.dim.extend([2])
    lp.blobs[1].data.extend([0.0] * 2)
    with pytest.raises(ShapeError, match=r"parameter blob 0 has shape \(3, 2, 3, 3\) but the layer expects \(2, 3, 3, 3\)"):
        ConvolutionLayer(lp).set_up([blob((1, 3, 4, 4))], [Blob()])


def _grads(layer, x, top, seed=1):
    """(dW, db, dx) of one backward with a fixed top diff; parameter diffs zeroed first."""
    top.diff[...] = np.random.default_rng(seed).normal(size=top.shape)
    for p in layer.blobs:
        p.diff[...] = 0
    layer.run_backward([top], [True], [x])
    return [p.diff.copy() for p in layer.blobs] + [x.diff.copy()]


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_backward_twice_and_in_either_phase_gives_the_same_gradients(phase):
    # Backward reuses forward's columns for dW, then overwrites them with W^T dy; a second
    # backward (or a TEST-phase layer, whose columns live in a shared buffer) must rebuild them.
    text = "convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: 'gaussian' } }"
    ref = make(text)
    x, top = blob((2, 2, 5, 4)), Blob()
    ref.set_up([x], [top])
    ref.run_forward([x], [top])
    expected = _grads(ref, x, top)
    layer = make(f"phase: {phase} " + text)
    layer.set_up([x], [Blob()])
    layer.blobs[0].data[...] = ref.blobs[0].data
    top2 = Blob()
    layer.reshape([x], [top2])
    layer.run_forward([x], [top2])
    # another layer's forward in between uses the shared scratch buffers
    other, other_top = make(f"phase: {phase} convolution_param {{ num_output: 5 kernel_size: 2 }}"), Blob()
    big = blob((3, 2, 9, 9), seed=2)
    other.set_up([big], [other_top])
    other.run_forward([big], [other_top])
    for _ in range(2):
        got = _grads(layer, x, top2)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_test_phase_forward_in_chunks_equals_the_whole_batch(monkeypatch):
    from pycaffe_lite.layers import convolution

    text = "convolution_param { num_output: 3 kernel_size: 2 group: 1 weight_filler { type: 'gaussian' } }"
    x = blob((5, 2, 4, 4), seed=4)
    whole, top_whole = make(text), Blob()
    whole.set_up([x], [top_whole])
    whole.run_forward([x], [top_whole])
    # columns of one image: K = 2*2*2 = 8 rows x P = 9 -> 288 bytes; 2.5 images' worth -> chunks 2, 2, 1
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 720)
    chunked, top_chunked = make("phase: TEST " + text), Blob()
    chunked.set_up([x], [top_chunked])
    chunked.blobs[0].data[...] = whole.blobs[0].data
    chunked.run_forward([x], [top_chunked])
    np.testing.assert_allclose(top_chunked.data, top_whole.data, rtol=1e-6, atol=1e-6)


# Both inner paths, whatever the shapes choose: channels-last rows (NHWC_MIN_RUN 1) and Caffe's
# columns (NHWC_MIN_RUN huge); CHUNK_BYTES small enough that the batch goes in several chunks.
PATHS = [pytest.param(1, True, id="rows"), pytest.param(1 << 30, False, id="columns")]
PATH_CASES = [
    ("convolution_param { num_output: 4 kernel_size: 3 }", (3, 3, 6, 5), (1, 1), (0, 0), (1, 1), 1),
    ("convolution_param { num_output: 5 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 }", (3, 6, 7, 5), (2, 2), (1, 1), (1, 1), 1),
    ("convolution_param { num_output: 3 kernel_size: 3 dilation: 2 pad_h: 2 pad_w: 1 stride_h: 1 stride_w: 2 }",
     (2, 4, 7, 8), (1, 2), (2, 1), (2, 2), 1),
]


@pytest.mark.parametrize("min_run,nhwc", PATHS)
@pytest.mark.parametrize("text,shape,stride,pad,dil,group", PATH_CASES)
def test_both_paths_match_reference_in_chunks(monkeypatch, min_run, nhwc, text, shape, stride, pad, dil, group):
    from pycaffe_lite.layers import convolution

    monkeypatch.setattr(convolution, "NHWC_MIN_RUN", min_run)
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)  # one image per chunk
    layer = make(text.replace("}", " weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' } }"))
    x, top = blob(shape), Blob()
    layer.set_up([x], [top])
    assert layer.nhwc is nhwc and layer.step == 1
    layer.run_forward([x], [top])
    ref = reference(x.data, layer.blobs[0].data.astype(np.float64), layer.blobs[1].data, stride, pad, dil, group)
    np.testing.assert_allclose(top.data, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("min_run,nhwc", PATHS)
@pytest.mark.parametrize("text,shape", [(c[0], c[1]) for c in PATH_CASES[1:]])
def test_both_paths_gradient(monkeypatch, min_run, nhwc, text, shape):
    from pycaffe_lite.layers import convolution

    monkeypatch.setattr(convolution, "NHWC_MIN_RUN", min_run)
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)
    layer = make(text.replace("}", " weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' } }"))
    x, top = blob(shape, 3), Blob()
    layer.set_up([x], [top])
    assert layer.nhwc is nhwc
    assert check_gradient(layer, [x], [top]) > 0


def test_rows_and_columns_give_the_same_gradients_with_two_bottoms(monkeypatch):
    from pycaffe_lite.layers import convolution

    text = ("convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 "
            "weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' } }")
    results = []
    for min_run in (1, 1 << 30):
        monkeypatch.setattr(convolution, "NHWC_MIN_RUN", min_run)
        monkeypatch.setattr(convolution, "CHUNK_BYTES", 3000)  # two images of K*P*4 = 1620 bytes: chunks 1, 1, 1
        layer = make(text)
        xs, tops = [blob((3, 5, 6, 6), seed=s) for s in (1, 2)], [Blob(), Blob()]
        layer.set_up(xs, tops)
        layer.blobs[0].data[...] = np.random.default_rng(9).normal(size=layer.blobs[0].shape)
        layer.blobs[1].data[...] = np.random.default_rng(8).normal(size=layer.blobs[1].shape)
        layer.run_forward(xs, tops)
        for i, t in enumerate(tops):
            t.diff[...] = np.random.default_rng(10 + i).normal(size=t.shape)
        layer.blobs[0].diff[...] = 1.0  # backward accumulates into the parameter diffs
        layer.blobs[1].diff[...] = 0.0
        layer.run_backward(tops, [True, True], xs)
        results.append([tops[0].data.copy(), tops[1].data.copy(), xs[0].diff.copy(), xs[1].diff.copy(),
                        layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not np.allclose(results[0][4], 1.0)


@pytest.mark.parametrize("min_run,nhwc", PATHS)
def test_connection_table_on_both_paths(monkeypatch, min_run, nhwc):
    from pycaffe_lite.layers import convolution

    monkeypatch.setattr(convolution, "NHWC_MIN_RUN", min_run)
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)
    pairs = [(0, 0), (1, 0), (2, 1), (0, 2), (2, 2), (1, 3)]
    table = " ".join(f"connection: {i} connection: {o}" for i, o in pairs)
    layer = make("convolution_param { num_output: 4 kernel_size: 3 pad: 1 "
                 "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' } " + table + " }")
    x, top = blob((2, 3, 5, 6), 3), Blob()
    layer.set_up([x], [top])
    assert layer.nhwc is nhwc
    layer.run_forward([x], [top])
    w = layer.blobs[0].data * layer.connection_mask[:, :, None, None]
    ref = reference(x.data, w.astype(np.float64), layer.blobs[1].data, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(top.data, ref, rtol=1e-4, atol=1e-4)
    assert check_gradient(layer, [x], [top], setup=False) > 0
    assert np.all(layer.blobs[0].diff[~layer.connection_mask] == 0)
