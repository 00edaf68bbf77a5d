"""The schema: the committed caffe_pb2 matches proto/caffe.proto, and the field numbers
and wire bytes that binary compatibility with BVLC Caffe depends on."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor as FD

from pycaffe_lite.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"


# ---------------------------------------------------------------------------
# (a) the generated module is not stale


def _protoc():
    try:
        from grpc_tools import protoc
    except ImportError:
        pytest.fail(
            "grpc_tools is not installed, so proto/caffe.proto cannot be compiled to check that "
            "pycaffe_lite/proto/caffe_pb2.py is up to date; it is in the test extra: "
            "pip install -e '.[test]'"
        )
    return protoc


def _normalize(file_proto: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """Drop what differs between protoc's descriptor set and the one embedded in _pb2.

    protoc adds json_name to its descriptor-set output only, and the Python generator
    spells float defaults at full float32 precision ("0.999000013" for "0.999").
    """
    def fix(messages) -> None:
        for message in messages:
            for f in message.field:
                f.ClearField("json_name")
                if f.HasField("default_value") and f.type == FD.TYPE_FLOAT:
                    value = struct.unpack("<f", struct.pack("<f", float(f.default_value)))[0]
                    f.default_value = repr(value)
                elif f.HasField("default_value") and f.type == FD.TYPE_DOUBLE:
                    f.default_value = repr(float(f.default_value))
            fix(message.nested_type)

    fix(file_proto.message_type)
    return file_proto


def test_generated_module_matches_schema(tmp_path):
    protoc = _protoc()
    out = tmp_path / "caffe.pb"
    status = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", str(PROTO_DIR / "caffe.proto")]
    )
    assert status == 0, "protoc could not compile proto/caffe.proto"
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto()
    caffe_pb2.DESCRIPTOR.CopyToProto(committed)
    if _normalize(compiled) != _normalize(committed):
        pytest.fail(
            "pycaffe_lite/proto/caffe_pb2.py is stale: proto/caffe.proto changed since it was "
            "generated; run python tools/gen_proto.py"
        )


def test_generated_header_names_the_generator():
    head = (ROOT / "pycaffe_lite" / "proto" / "caffe_pb2.py").read_text().splitlines()[:5]
    assert any("tools/gen_proto.py" in line for line in head)


# ---------------------------------------------------------------------------
# (b) field numbers and types that caffemodels and solverstates depend on


def _field(message, name: str):
    return message.DESCRIPTOR.fields_by_name[name]


@pytest.mark.parametrize(
    ("message", "name", "number", "ftype"),
    [
        (caffe_pb2.BlobShape, "dim", 1, FD.TYPE_INT64),
        (caffe_pb2.BlobProto, "shape", 7, FD.TYPE_MESSAGE),
        (caffe_pb2.BlobProto, "data", 5, FD.TYPE_FLOAT),
        (caffe_pb2.BlobProto, "diff", 6, FD.TYPE_FLOAT),
        (caffe_pb2.BlobProto, "double_data", 8, FD.TYPE_DOUBLE),
        (caffe_pb2.BlobProto, "double_diff", 9, FD.TYPE_DOUBLE),
        (caffe_pb2.BlobProto, "num", 1, FD.TYPE_INT32),
        (caffe_pb2.BlobProto, "width", 4, FD.TYPE_INT32),
        (caffe_pb2.BlobProtoVector, "blobs", 1, FD.TYPE_MESSAGE),
        (caffe_pb2.Datum, "channels", 1, FD.TYPE_INT32),
        (caffe_pb2.Datum, "height", 2, FD.TYPE_INT32),
        (caffe_pb2.Datum, "width", 3, FD.TYPE_INT32),
        (caffe_pb2.Datum, "data", 4, FD.TYPE_BYTES),
        (caffe_pb2.Datum, "label", 5, FD.TYPE_INT32),
        (caffe_pb2.Datum, "float_data", 6, FD.TYPE_FLOAT),
        (caffe_pb2.Datum, "encoded", 7, FD.TYPE_BOOL),
        (caffe_pb2.NetParameter, "name", 1, FD.TYPE_STRING),
        (caffe_pb2.NetParameter, "layers", 2, FD.TYPE_MESSAGE),
        (caffe_pb2.NetParameter, "input", 3, FD.TYPE_STRING),
        (caffe_pb2.NetParameter, "input_dim", 4, FD.TYPE_INT32),
        (caffe_pb2.NetParameter, "input_shape", 8, FD.TYPE_MESSAGE),
        (caffe_pb2.NetParameter, "layer", 100, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "name", 1, FD.TYPE_STRING),
        (caffe_pb2.LayerParameter, "type", 2, FD.TYPE_STRING),
        (caffe_pb2.LayerParameter, "param", 6, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "blobs", 7, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "phase", 10, FD.TYPE_ENUM),
        (caffe_pb2.LayerParameter, "transform_param", 100, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "loss_param", 101, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "accuracy_param", 102, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "convolution_param", 106, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "inner_product_param", 117, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "batch_norm_param", 139, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "input_param", 143, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "recurrent_param", 146, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "swish_param", 147, FD.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "clip_param", 148, FD.TYPE_MESSAGE),
        (caffe_pb2.ParamSpec, "lr_mult", 3, FD.TYPE_FLOAT),
        (caffe_pb2.ParamSpec, "decay_mult", 4, FD.TYPE_FLOAT),
        (caffe_pb2.SolverState, "iter", 1, FD.TYPE_INT32),
        (caffe_pb2.SolverState, "learned_net", 2, FD.TYPE_STRING),
        (caffe_pb2.SolverState, "history", 3, FD.TYPE_MESSAGE),
        (caffe_pb2.SolverState, "current_step", 4, FD.TYPE_INT32),
        (caffe_pb2.SolverParameter, "base_lr", 5, FD.TYPE_FLOAT),
        (caffe_pb2.SolverParameter, "solver_type", 30, FD.TYPE_ENUM),
        (caffe_pb2.SolverParameter, "type", 40, FD.TYPE_STRING),
        (caffe_pb2.SolverParameter, "random_seed", 20, FD.TYPE_INT64),
        (caffe_pb2.SolverParameter, "weights", 42, FD.TYPE_STRING),
        (caffe_pb2.V1LayerParameter, "layer", 1, FD.TYPE_MESSAGE),
        (caffe_pb2.V1LayerParameter, "type", 5, FD.TYPE_ENUM),
        (caffe_pb2.V1LayerParameter, "blobs", 6, FD.TYPE_MESSAGE),
        (caffe_pb2.V1LayerParameter, "blobs_lr", 7, FD.TYPE_FLOAT),
        (caffe_pb2.V1LayerParameter, "weight_decay", 8, FD.TYPE_FLOAT),
        (caffe_pb2.V1LayerParameter, "param", 1001, FD.TYPE_STRING),
        (caffe_pb2.V1LayerParameter, "blob_share_mode", 1002, FD.TYPE_ENUM),
        (caffe_pb2.V0LayerParameter, "blobs", 50, FD.TYPE_MESSAGE),
    ],
)
def test_field_number_and_type(message, name, number, ftype):
    fd = _field(message, name)
    assert (fd.number, fd.type) == (number, ftype)


def test_packed_fields_are_the_ones_caffe_packs():
    for message, name in [
        (caffe_pb2.BlobShape, "dim"),
        (caffe_pb2.BlobProto, "data"),
        (caffe_pb2.BlobProto, "diff"),
        (caffe_pb2.BlobProto, "double_data"),
        (caffe_pb2.BlobProto, "double_diff"),
    ]:
        assert _field(message, name).GetOptions().packed, f"{message.__name__}.{name} must be packed"
    # proto2 repeated scalars without [packed = true] are written unpacked.
    assert not _field(caffe_pb2.Datum, "float_data").GetOptions().packed


def test_enum_numbers():
    lt = caffe_pb2.V1LayerParameter.LayerType
    assert (lt.Value("CONVOLUTION"), lt.Value("INNER_PRODUCT"), lt.Value("SOFTMAX_LOSS")) == (4, 14, 21)
    assert (lt.Value("ABSVAL"), lt.Value("DECONVOLUTION"), lt.Value("SILENCE")) == (35, 39, 36)
    assert len(lt.keys()) == 40
    assert (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)
    st = caffe_pb2.SolverParameter.SolverType
    assert [st.Value(n) for n in ("SGD", "NESTEROV", "ADAGRAD", "RMSPROP", "ADADELTA", "ADAM")] == list(
        range(6)
    )
    assert caffe_pb2.LossParameter.NormalizationMode.Value("VALID") == 1


def test_defaults_that_change_results():
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.ParamSpec().lr_mult == 1.0
    assert caffe_pb2.SolverParameter().type == "SGD"
    assert caffe_pb2.SolverParameter().clip_gradients == -1
    assert caffe_pb2.SolverParameter().random_seed == -1
    assert caffe_pb2.FillerParameter().type == "constant"
    assert caffe_pb2.DataParameter().backend == caffe_pb2.DataParameter.LEVELDB
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST


def test_no_fork_only_fields():
    assert "round_mode" not in caffe_pb2.PoolingParameter.DESCRIPTOR.fields_by_name
    names = set(caffe_pb2.DESCRIPTOR.message_types_by_name)
    assert not names & {"AnnotatedDatum", "LabelMap", "NormalizedBBox", "Sampler", "BatchSampler"}
    assert "eval_type" not in caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name


# ---------------------------------------------------------------------------
# (c) wire bytes


def test_blobproto_bytes_and_round_trip():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.append(2)
    blob.data.extend([1.0, 2.0])
    wire = blob.SerializeToString()
    # data (5, packed floats) then shape (7) holding dim (1, packed varints).
    assert wire == bytes.fromhex("2a08" "0000803f" "00000040" "3a03" "0a0102")
    back = caffe_pb2.BlobProto.FromString(wire)
    assert back == blob
    assert list(back.shape.dim) == [2] and list(back.data) == [1.0, 2.0]


def test_legacy_blobproto_round_trip():
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4, data=[0.5] * 24, diff=[0.25] * 24)
    back = caffe_pb2.BlobProto.FromString(blob.SerializeToString())
    assert (back.num, back.channels, back.height, back.width) == (1, 2, 3, 4)
    assert list(back.diff) == [0.25] * 24 and not back.HasField("shape")


def test_datum_bytes_and_round_trip():
    datum = caffe_pb2.Datum(channels=1, height=2, width=2, data=bytes([0, 1, 2, 255]), label=7)
    wire = datum.SerializeToString()
    assert wire == bytes.fromhex("0801" "1002" "1802" "220400" "0102ff" "2807")
    back = caffe_pb2.Datum.FromString(wire)
    assert back == datum and back.data == bytes([0, 1, 2, 255]) and not back.encoded

    floats = caffe_pb2.Datum(float_data=[1.0])
    assert floats.SerializeToString() == bytes.fromhex("35" "0000803f")  # field 6, fixed32, unpacked
