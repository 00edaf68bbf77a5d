"""Fields of Caffe forks: refused with the field, the line and a fork hint; or, in the opt-in
lenient mode, dropped with a warning naming each field and line."""
from __future__ import annotations

import logging

import pytest

import pycaffe_lite as pl
from pycaffe_lite.errors import PrototxtSyntaxError
from pycaffe_lite.io import prototxt
from pycaffe_lite.io.prototxt import parse_net, read_net, read_solver, set_lenient

FORK_NET = """\
name: "fork"
layer {
  name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 2 dim: 7 dim: 7 } }
}
layer {
  name: "pool"
  type: "Pooling" bottom: "data" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false }
  roi_pooling_param {
    pooled_h: 7 pooled_w: 7
    spatial_scale: 0.0625
  }
  fancy_thing: "a" "b"
  fancy_list: [1, 2]
}
layer { name: "relu" type: "ReLU" bottom: "pool" top: "pool" }
"""


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


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_fork_field_error_names_field_line_and_fork():
    with pytest.raises(PrototxtSyntaxError) as e:
        read_net(FORK_NET, filename="fork.prototxt")
    msg = str(e.value)
    assert msg.startswith("fork.prototxt:9:")
    assert "unknown field 'ceil_mode' in caffe.PoolingParameter" in msg
    assert "comes from a Caffe fork" in msg and "written for that fork" in msg and "--lenient" in msg


def test_known_fork_blocks_are_named():
    text = FORK_NET.replace(" ceil_mode: false", "")
    with pytest.raises(PrototxtSyntaxError, match=r"fork.prototxt:10:3: unknown field 'roi_pooling_param'.*"
                                                  r"Fast/Faster R-CNN's Caffe"):
        read_net(text, filename="fork.prototxt")


def test_unknown_field_without_a_close_name_gets_the_generic_fork_hint():
    with pytest.raises(PrototxtSyntaxError, match=r"unknown field 'fancy_widget' in caffe.LayerParameter; it is not in "
                                                  r"BVLC Caffe's schema: if the file was written for a Caffe fork"):
        parse_net('layer { name: "a" fancy_widget { x: 1 } }')


def test_round_mode_keeps_its_own_hint():
    # round_mode is BVLC master's (after 1.0), not a fork's: its hint says what we do instead
    with pytest.raises(PrototxtSyntaxError, match=r"CEIL rounding only; remove round_mode\)$"):
        parse_net('layer { name: "p" type: "Pooling" pooling_param { round_mode: FLOOR } }')


def test_lenient_drops_each_unknown_field_and_keeps_lines(caplog):
    parsed = read_net(FORK_NET, filename="fork.prototxt", lenient=True)
    pool = parsed.param.layer[1]
    assert pool.pooling_param.kernel_size == 3 and pool.pooling_param.stride == 2
    assert pool.type == "Pooling" and list(pool.top) == ["pool"]
    assert parsed.layer_lines == [2, 6, 17]  # later layers keep their lines
    assert warnings_of(caplog) == [
        "fork.prototxt:9: skipping unknown field 'ceil_mode' of caffe.PoolingParameter (lenient mode)",
        "fork.prototxt:10: skipping unknown field 'roi_pooling_param' of caffe.LayerParameter (lenient mode)",
        "fork.prototxt:14: skipping unknown field 'fancy_thing' of caffe.LayerParameter (lenient mode)",
        "fork.prototxt:15: skipping unknown field 'fancy_list' of caffe.LayerParameter (lenient mode)",
    ]
    net = pl.Net(parsed, phase=pl.TEST)
    assert net.blobs["pool"].data.shape == (1, 2, 3, 3)


def test_lenient_does_not_hide_other_errors():
    with pytest.raises(PrototxtSyntaxError, match=r"<string>:1:.*near"):
        parse_net('layer { name: "a" type: }', lenient=True)
    with pytest.raises(PrototxtSyntaxError, match="'MAXX' is not a value"):
        parse_net('layer { pooling_param { pool: MAXX ceil_mode: true } }', lenient=True)


def test_set_lenient_is_the_default_for_nets_read_anywhere(tmp_path):
    (tmp_path / "net.prototxt").write_text(FORK_NET)
    (tmp_path / "solver.prototxt").write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nfancy: 1\n')
    old = set_lenient(True)
    try:
        assert prototxt._LENIENT_DEFAULT is True
        net = pl.Net(str(tmp_path / "net.prototxt"), phase=pl.TEST)
        assert "pool" in net.blobs
        assert read_solver(tmp_path / "solver.prototxt").param.base_lr == pytest.approx(0.1)
        with pytest.raises(PrototxtSyntaxError):
            read_net(tmp_path / "net.prototxt", lenient=False)  # an explicit argument wins
    finally:
        set_lenient(old)
    with pytest.raises(PrototxtSyntaxError, match="ceil_mode"):
        pl.Net(str(tmp_path / "net.prototxt"), phase=pl.TEST)
