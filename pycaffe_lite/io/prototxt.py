"""Prototxt nets and solvers: parse, upgrade the legacy formats, keep line numbers.

A net is read in the steps Caffe's ``UpgradeNetAsNeeded`` takes, in its order:

1. V0 -> V1: ``layers { layer { type: "conv" ... } }`` (Caffe's first format;
   "padding" layers are folded into the conv/pool layer they feed);
2. data transformation: the legacy ``scale``/``mean_file``/``crop_size``/
   ``mirror`` of Data, ImageData and WindowData move into ``transform_param``;
3. V1 -> current: ``layers { type: CONVOLUTION blobs_lr: 1 ... }`` becomes
   ``layer { type: "Convolution" param { lr_mult: 1 } ... }``;
4. net inputs: ``input`` + ``input_dim``/``input_shape`` become one ``Input``
   layer named ``input``, placed first;
5. BatchNorm: the three ``param`` entries older nets gave it (all lr_mult 0) are
   dropped; the layer fixes its statistics' multipliers itself.

A net already in the current format passes through unchanged.  Solvers get
``solver_type: NESTEROV`` turned into ``type: "Nesterov"``.

Paths ending in ``.yaml``/``.yml`` are read as YAML nets and solvers (same fields and
nesting; see :mod:`pycaffe_lite.io.yaml_format`).  An unknown field is an error naming
the field and the line, with a hint when it is a known Caffe fork's field; the opt-in
lenient mode (``lenient=True``, ``plite ... --lenient``) drops unknown fields instead,
with a warning for each.

Python's protobuf has no parse-location tree, so a small scanner over the
(already valid) text recovers the line of every field; ``ParsedNet.layer_lines``
gives the 1-based line of each entry of ``param.layer`` for error messages.
"""
from __future__ import annotations

import bisect
import contextlib
import difflib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from pycaffe_lite.errors import (
    DataError,
    NetConfigError,
    PrototxtSyntaxError,
    SolverConfigError,
)
from pycaffe_lite.errors import where as _where
from pycaffe_lite.proto import caffe_pb2

__all__ = [
    "FORK_FIELDS",
    "ParsedNet",
    "ParsedSolver",
    "parse_net",
    "parse_solver",
    "read_net",
    "read_solver",
    "set_lenient",
    "upgrade_file",
    "upgrade_net",
    "write_text",
]

log = logging.getLogger(__name__)

#: The name messages use for prototxt given as text, like Python's "<string>".
TEXT_FILENAME = "<string>"

#: Whether read_net/read_solver drop unknown fields (with a warning) when not told;
#: the CLI's ``--lenient`` sets it, so nets read deep inside a solver follow it too.
_LENIENT_DEFAULT = False


def set_lenient(lenient: bool) -> bool:
    """Make lenient parsing the default for every later read (returns the old default)."""
    global _LENIENT_DEFAULT
    old, _LENIENT_DEFAULT = _LENIENT_DEFAULT, bool(lenient)
    return old


def _lenient(lenient: bool | None) -> bool:
    return _LENIENT_DEFAULT if lenient is None else bool(lenient)


#: Well-known fields of Caffe forks (absent from BVLC Caffe's schema) -> the fork family.
FORK_FIELDS: dict[str, str] = {
    "ceil_mode": "a pooling rounding switch several forks added",
    "roi_pooling_param": "Fast/Faster R-CNN's Caffe",
    "proposal_param": "Faster R-CNN's Caffe",
    "smooth_l1_loss_param": "Fast/Faster R-CNN's Caffe",
    "psroi_pooling_param": "R-FCN's Caffe",
    "prior_box_param": "SSD's Caffe",
    "multibox_loss_param": "SSD's Caffe",
    "detection_output_param": "SSD's Caffe",
    "detection_evaluate_param": "SSD's Caffe",
    "annotated_data_param": "SSD's Caffe",
    "norm_param": "SSD's Caffe",
    "video_data_param": "SSD's Caffe",
    "interp_param": "DeepLab's / PSPNet's Caffe",
    "upsample_param": "SegNet's Caffe",
    "bn_param": "the BN fork of Caffe (yjxiong/SegNet)",
    "shuffle_channel_param": "ShuffleNet forks",
    "reorg_param": "YOLO ports",
    "region_param": "YOLO ports",
    "deformable_convolution_param": "Deformable ConvNets' Caffe",
    "margin_inner_product_param": "SphereFace's Caffe",
    "center_loss_param": "the center-loss fork of Caffe",
    "triplet_loss_param": "triplet-loss forks",
    "focal_loss_param": "focal-loss forks",
    "quantization_param": "Ristretto",
}

# ---------------------------------------------------------------------------
# Upgrade tables (facts from Caffe's upgrade_proto.cpp)

#: V1 LayerType enum name -> current type string.
V1_LAYER_TYPES: dict[str, str] = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

#: V0 type string -> V1 LayerType enum name ("padding" is folded away first).
V0_LAYER_TYPES: dict[str, str] = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

_CONV_IP = {"conv": "convolution_param", "innerproduct": "inner_product_param"}

#: V0 field -> {V0 type: "param.field"} in the V1 layer.  A repeated target
#: (conv pad/kernel_size/stride) gets the value appended.
_V0_FIELDS: dict[str, dict[str, str]] = {
    "num_output": {t: f"{p}.num_output" for t, p in _CONV_IP.items()},
    "biasterm": {t: f"{p}.bias_term" for t, p in _CONV_IP.items()},
    "weight_filler": {t: f"{p}.weight_filler" for t, p in _CONV_IP.items()},
    "bias_filler": {t: f"{p}.bias_filler" for t, p in _CONV_IP.items()},
    "pad": {"conv": "convolution_param.pad", "pool": "pooling_param.pad"},
    "kernelsize": {
        "conv": "convolution_param.kernel_size",
        "pool": "pooling_param.kernel_size",
    },
    "group": {"conv": "convolution_param.group"},
    "stride": {"conv": "convolution_param.stride", "pool": "pooling_param.stride"},
    "pool": {"pool": "pooling_param.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    "local_size": {"lrn": "lrn_param.local_size"},
    "alpha": {"lrn": "lrn_param.alpha"},
    "beta": {"lrn": "lrn_param.beta"},
    "k": {"lrn": "lrn_param.k"},
    "source": {
        "data": "data_param.source",
        "hdf5_data": "hdf5_data_param.source",
        "images": "image_data_param.source",
        "window_data": "window_data_param.source",
        "infogain_loss": "infogain_loss_param.source",
    },
    "batchsize": {
        "data": "data_param.batch_size",
        "hdf5_data": "hdf5_data_param.batch_size",
        "images": "image_data_param.batch_size",
        "window_data": "window_data_param.batch_size",
    },
    "rand_skip": {
        "data": "data_param.rand_skip",
        "images": "image_data_param.rand_skip",
    },
    "shuffle_images": {"images": "image_data_param.shuffle"},
    "new_height": {"images": "image_data_param.new_height"},
    "new_width": {"images": "image_data_param.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "det_fg_threshold": {"window_data": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"window_data": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"window_data": "window_data_param.fg_fraction"},
    "det_context_pad": {"window_data": "window_data_param.context_pad"},
    "det_crop_mode": {"window_data": "window_data_param.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
}

#: V0 preprocessing fields -> TransformationParameter fields (any layer type).
_V0_TRANSFORM = {
    "scale": "scale",
    "meanfile": "mean_file",
    "cropsize": "crop_size",
    "mirror": "mirror",
}

#: V1 data layers whose own parameter message still carries preprocessing.
_V1_DATA_PARAMS = {
    "DATA": "data_param",
    "IMAGE_DATA": "image_data_param",
    "WINDOW_DATA": "window_data_param",
}
_LEGACY_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

#: Legacy ``solver_type`` enum name -> ``type`` string.
SOLVER_TYPES: dict[str, str] = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

# ---------------------------------------------------------------------------
# Results


@dataclass
class ParsedNet:
    """A net definition, upgraded to the current ``layer`` form, with its source map.

    Attributes
    ----------
    param : caffe_pb2.NetParameter
        The net; legacy formats already upgraded.
    filename : str or None
        Where it was read from: the path, the ``filename`` argument, or
        ``"<string>"`` for inline text (so messages still carry ``<string>:line:``).
        None only when built by hand.
    layer_lines : list of int or None
        1-based line of each entry of ``param.layer``, same order.  The Input
        layer made from legacy ``input`` fields gets the line of the first
        ``input:``; None where the text is unknown (e.g. inline solver nets).
    layer_fields : list of dict
        Per layer, the line of the first occurrence of each field written in
        its block (legacy spellings are mapped onto the current field names).
    """

    param: caffe_pb2.NetParameter
    filename: str | None
    layer_lines: list[int | None]
    layer_fields: list[dict[str, int]] = field(default_factory=list, repr=False)

    def field_line(self, layer_index: int, field_name: str) -> int | None:
        """Line of ``field_name`` in layer ``layer_index``, else the layer's line.

        Parameters
        ----------
        layer_index : int
            Index into ``param.layer``.
        field_name : str
            A LayerParameter field name, e.g. ``"convolution_param"``.

        Returns
        -------
        int or None
            The 1-based line, or None if the layer's place is unknown.
        """
        if 0 <= layer_index < len(self.layer_fields):
            line = self.layer_fields[layer_index].get(field_name)
            if line is not None:
                return line
        if 0 <= layer_index < len(self.layer_lines):
            return self.layer_lines[layer_index]
        return None

    def location(self, layer_index: int, field_name: str | None = None) -> str:
        """``"file:line: "`` prefix for messages about a layer (or one of its fields)."""
        if field_name is None:
            line = self.layer_lines[layer_index] if 0 <= layer_index < len(self.layer_lines) else None
        else:
            line = self.field_line(layer_index, field_name)
        return _where(self.filename, line)


@dataclass
class ParsedSolver:
    """A solver definition (``solver_type`` already upgraded) with field lines.

    Attributes
    ----------
    param : caffe_pb2.SolverParameter
        The solver; inline nets (``net_param``, ``train_net_param``,
        ``test_net_param``) are upgraded like net files.
    filename : str or None
        Where it was read from: the path, the ``filename`` argument, or
        ``"<string>"`` for inline text (so messages still carry ``<string>:line:``).
        None only when built by hand.
    field_lines : dict
        Line of the first occurrence of each top-level field.
    """

    param: caffe_pb2.SolverParameter
    filename: str | None
    field_lines: dict[str, int] = field(default_factory=dict, repr=False)

    def field_line(self, field_name: str) -> int | None:
        """1-based line of a top-level field, or None when it was not written."""
        return self.field_lines.get(field_name)

    def location(self, field_name: str | None = None) -> str:
        """``"file:line: "`` prefix for messages about the solver or one field."""
        line = self.field_line(field_name) if field_name else None
        return _where(self.filename, line)


# ---------------------------------------------------------------------------
# Public API


def read_net(
    source: str | os.PathLike[str], *, filename: str | None = None, lenient: bool | None = None
) -> ParsedNet:
    """Read a net prototxt (path or text; ``.yaml``/``.yml`` paths as YAML), upgrade it,
    and keep its line numbers.

    Parameters
    ----------
    source : str or os.PathLike
        A path, or the prototxt text itself (a ``str`` containing a newline,
        ``{`` or ``:`` is taken as text unless it names an existing file).
    filename : str, optional
        Name used in messages; defaults to the path, or ``"<string>"`` for text.
    lenient : bool, optional
        Drop fields the schema does not know (a Caffe fork's) with a warning naming
        each field and line, instead of failing.  Default: :func:`set_lenient`'s.

    Returns
    -------
    ParsedNet

    Raises
    ------
    DataError
        The file does not exist or cannot be read.
    PrototxtSyntaxError
        Invalid text format, an unknown field, or a missing required field.
    NetConfigError
        A legacy net that cannot be upgraded (mixed ``layer``/``layers``,
        inconsistent inputs, an unknown V0 type...).
    """
    text, filename = _load_source(source, filename)
    if _is_yaml(source, filename):
        from .yaml_format import read_net_yaml

        return read_net_yaml(text, filename, lenient=_lenient(lenient))
    return _read_net_text(text, filename, _lenient(lenient))


def parse_net(
    source: str | os.PathLike[str], *, filename: str | None = None, lenient: bool | None = None
) -> caffe_pb2.NetParameter:
    """Like :func:`read_net` but return only the upgraded ``NetParameter``."""
    return read_net(source, filename=filename, lenient=lenient).param


def read_solver(
    source: str | os.PathLike[str], *, filename: str | None = None, lenient: bool | None = None
) -> ParsedSolver:
    """Read a solver prototxt (path or text; ``.yaml``/``.yml`` paths as YAML) and upgrade
    ``solver_type``.

    Parameters
    ----------
    source : str or os.PathLike
        A path, or the prototxt text itself (see :func:`read_net`).
    filename : str, optional
        Name used in messages; defaults to the path, or ``"<string>"`` for text.
    lenient : bool, optional
        Drop unknown fields with a warning (see :func:`read_net`).

    Returns
    -------
    ParsedSolver

    Raises
    ------
    DataError
        The file does not exist or cannot be read.
    PrototxtSyntaxError
        Invalid text format or an unknown field.
    SolverConfigError
        ``solver_type`` and ``type`` are both given and disagree.
    """
    text, filename = _load_source(source, filename)
    if _is_yaml(source, filename):
        from .yaml_format import read_solver_yaml

        return read_solver_yaml(text, filename, lenient=_lenient(lenient))
    return _read_solver_text(text, filename, _lenient(lenient))


def parse_solver(
    source: str | os.PathLike[str], *, filename: str | None = None, lenient: bool | None = None
) -> caffe_pb2.SolverParameter:
    """Like :func:`read_solver` but return only the ``SolverParameter``."""
    return read_solver(source, filename=filename, lenient=lenient).param


def upgrade_net(
    param: caffe_pb2.NetParameter, *, filename: str | None = None
) -> caffe_pb2.NetParameter:
    """Upgrade a NetParameter from any legacy form in place (e.g. a binary caffemodel).

    The same steps as :func:`read_net`, without line numbers.

    Parameters
    ----------
    param : caffe_pb2.NetParameter
        The net; modified in place.
    filename : str, optional
        Name used in messages.

    Returns
    -------
    caffe_pb2.NetParameter
        ``param`` itself.
    """
    _upgrade_net(param, None, None, filename)
    return param


def upgrade_v1_net(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """Alias of :func:`upgrade_net` (the name ``io.caffemodel`` imports)."""
    return upgrade_net(param)


def upgrade_file(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Message:
    """Rewrite a net or solver prototxt in the current format (``plite upgrade``).

    A file whose top-level fields include one that only solvers have
    (``base_lr``, ``net``, ``train_net``, ``lr_policy``...) is a solver;
    anything else is read as a net.  The output is written atomically and may
    be the input file itself.

    Parameters
    ----------
    in_path, out_path : str or os.PathLike
        Source and destination files.

    Returns
    -------
    google.protobuf.message.Message
        The upgraded ``NetParameter`` or ``SolverParameter`` that was written.
    """
    text, filename = _load_source(Path(in_path), None)
    if _looks_like_solver(_scan(text)):
        message: Message = _read_solver_text(text, filename).param
        kind = "solver"
    else:
        message = _read_net_text(text, filename).param
        kind = "net"
    write_text(message, out_path)
    log.debug("Wrote upgraded %s %s to %s", kind, filename, os.fspath(out_path))
    return message


def write_text(message: Message, path: str | os.PathLike[str]) -> None:
    """Write ``message`` in protobuf text format, atomically (temp file + replace).

    Parameters
    ----------
    message : google.protobuf.message.Message
        Usually a NetParameter or SolverParameter.
    path : str or os.PathLike
        Destination; replaced only once the new text is completely written.

    Raises
    ------
    DataError
        The destination folder does not exist or is not writable.
    """
    _write_atomic(Path(path), text_format.MessageToString(message))


# ---------------------------------------------------------------------------
# Reading


def _is_yaml(source, filename: str | None) -> bool:
    """A ``.yaml``/``.yml`` path (text given inline is always prototxt)."""
    if isinstance(source, str) and not _looks_like_path(source):
        return False
    return str(filename or source).lower().endswith((".yaml", ".yml"))


def _looks_like_path(source: str) -> bool:
    if not source or "\n" in source or "{" in source or source.lstrip().startswith("#"):
        return False
    return ":" not in source or os.path.isfile(source)


def _load_source(source: str | os.PathLike[str], filename: str | None) -> tuple[str, str | None]:
    """Return (text, filename) for a path or a text."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise DataError(f"{path}: is a folder, expected a prototxt file") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PrototxtSyntaxError(
                f"{filename or path}: not a text prototxt (byte {exc.start} is not UTF-8);"
                " binary files such as .caffemodel are not prototxt"
            ) from None
        return text, filename or str(path)
    if not isinstance(source, str):
        raise TypeError(f"expected a path or prototxt text, got {type(source).__name__}")
    return source, filename or TEXT_FILENAME


def _read_net_text(text: str, filename: str | None, lenient: bool = False) -> ParsedNet:
    net = caffe_pb2.NetParameter()
    text = _parse_text(text, net, filename, lenient)
    root = _scan(text)
    _check_required(net, root, filename)
    kinds = ("layer", "layers")
    nodes = [n for n in root.children if n.name in kinds]
    lines, fields = _upgrade_net(net, nodes, root, filename)
    return ParsedNet(param=net, filename=filename, layer_lines=lines, layer_fields=fields)


def _read_solver_text(text: str, filename: str | None, lenient: bool = False) -> ParsedSolver:
    solver = caffe_pb2.SolverParameter()
    text = _parse_text(text, solver, filename, lenient)
    root = _scan(text)
    _check_required(solver, root, filename)
    field_lines = root.first_lines()
    upgrade_solver_type(solver, filename, field_lines.get("solver_type"))
    for name in ("net_param", "train_net_param"):
        if solver.HasField(name):
            _upgrade_net(getattr(solver, name), None, None, filename)
    for net in solver.test_net_param:
        _upgrade_net(net, None, None, filename)
    return ParsedSolver(param=solver, filename=filename, field_lines=field_lines)


def _looks_like_solver(root: _Node) -> bool:
    net_fields = set(caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name)
    solver_only = set(caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name) - net_fields
    return any(child.name in solver_only for child in root.children)


def _write_atomic(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    mode = 0o644
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode & 0o777
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise DataError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------
# Errors


_LOCATION_PREFIX = re.compile(r"^\d+(?::\d+)? : ")
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')
_UNKNOWN_ENUM = re.compile(r'Enum type "([\w.]+)" has no value named (\S+?)\.?$')

#: Fields that belong to the other format or file kind, with what to do instead.
_MISPLACED_HINTS: dict[tuple[str, str], str] = {
    ("caffe.LayerParameter", "blobs_lr"): (
        "blobs_lr is legacy V1 syntax; in a 'layer' block write param { lr_mult: ... }"
    ),
    ("caffe.LayerParameter", "weight_decay"): (
        "weight_decay is legacy V1 syntax; in a 'layer' block write param { decay_mult: ... }"
    ),
    ("caffe.PoolingParameter", "round_mode"): (
        "pycaffe_lite pools with Caffe's default CEIL rounding only; remove round_mode"
    ),
}


def _place(filename: str | None, line: int | None, column: int | None = None) -> str:
    name = filename or TEXT_FILENAME
    if line and column:
        return f"{name}:{line}:{column}: "
    return _where(name, line)


def _parse_text(text: str, message: Message, filename: str | None, lenient: bool = False) -> str:
    """Parse ``text`` into ``message``; return the text parsed (lenient mode blanks fields out)."""
    while True:
        try:
            text_format.Parse(text, message)
            return text
        except text_format.ParseError as exc:
            error = _syntax_error(exc, text, filename)
            match = _UNKNOWN_FIELD.search(str(exc))
            if not (lenient and match and exc.GetLine() and exc.GetColumn()):
                raise error from None
            line, column = exc.GetLine(), exc.GetColumn()
            blanked = _blank_field(text, line, column)
            if blanked is None:
                raise error from None
            log.warning(
                "%sskipping unknown field '%s' of %s (lenient mode)",
                _place(filename, line), match.group(2), match.group(1),
            )
            text = blanked
            message.Clear()


def _blank_field(text: str, line: int, column: int) -> str | None:
    """``text`` with the field starting at ``line``:``column`` (1-based) and its value or
    block replaced by spaces (newlines kept, so every later line number still holds)."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    if line > len(line_starts):
        return None
    start = line_starts[line - 1] + column - 1
    tokens = []
    for match in _TOKEN.finditer(text, start):
        if match.lastgroup != "skip":
            tokens.append(match)
    if not tokens or tokens[0].lastgroup != "ident":
        return None
    i = 1
    if i < len(tokens) and tokens[i].group() == ":":
        i += 1
    if i >= len(tokens):
        return None
    opener = tokens[i].group()
    if opener in ("{", "<", "["):
        closer = {"{": "}", "<": ">", "[": "]"}[opener]
        depth = 0
        for j in range(i, len(tokens)):
            tok = tokens[j].group()
            if tok == opener:
                depth += 1
            elif tok == closer:
                depth -= 1
                if depth == 0:
                    end = tokens[j].end()
                    break
        else:
            return None
    else:
        end = tokens[i].end()
        # a string value may be a run of adjacent literals ("a" "b")
        while i + 1 < len(tokens) and tokens[i].lastgroup == "string" and tokens[i + 1].lastgroup == "string":
            i += 1
            end = tokens[i].end()
    removed = re.sub(r"[^\n]", " ", text[start:end])
    return text[:start] + removed + text[end:]


def _syntax_error(exc: text_format.ParseError, text: str, filename: str | None) -> PrototxtSyntaxError:
    line, column = exc.GetLine(), exc.GetColumn()
    lines = text.split("\n")
    raw = lines[line - 1] if line and 0 < line <= len(lines) else ""
    detail = _LOCATION_PREFIX.sub("", str(exc), count=1)
    # Some protobuf messages quote the whole line first; the "near" part says it.
    quoted = f"'{raw}': "
    if raw and detail.startswith(quoted):
        detail = detail[len(quoted):]
    place = _place(filename, line, column)

    match = _UNKNOWN_FIELD.search(detail)
    if match:
        type_name, name = match.groups()
        hint = _field_hint(type_name, name)
        return PrototxtSyntaxError(f"{place}unknown field '{name}' in {type_name}{hint}")
    match = _UNKNOWN_ENUM.search(detail)
    if match:
        type_name, value = match.groups()
        hint = _enum_hint(type_name, value)
        return PrototxtSyntaxError(f"{place}'{value}' is not a value of {type_name}{hint}")
    near = raw.strip()
    if len(near) > 60:
        near = near[:57] + "..."
    suffix = f", near '{near}'" if near else ""
    return PrototxtSyntaxError(f"{place}{detail.rstrip('.')}{suffix}")


def _field_hint(type_name: str, name: str) -> str:
    hint = _MISPLACED_HINTS.get((type_name, name))
    if hint:
        return f" ({hint}){_fork_hint(name) if name in FORK_FIELDS else ''}"
    if name in FORK_FIELDS:
        return _fork_hint(name)
    try:
        desc = caffe_pb2.DESCRIPTOR.pool.FindMessageTypeByName(type_name)
    except KeyError:
        return ""
    close = difflib.get_close_matches(name, list(desc.fields_by_name), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if type_name == "caffe.NetParameter" and name in caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name:
        return " (this looks like a solver definition, not a net)"
    if type_name == "caffe.SolverParameter" and name in caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name:
        return " (this looks like a net definition, not a solver)"
    return (
        "; it is not in BVLC Caffe's schema: if the file was written for a Caffe fork, remove the "
        "field or pass --lenient (read_net(..., lenient=True)) to skip unknown fields with a warning"
    )


def _fork_hint(name: str) -> str:
    return (
        f"; '{name}' comes from a Caffe fork ({FORK_FIELDS[name]}), not BVLC Caffe: this file was "
        "written for that fork. Remove the field, or pass --lenient (read_net(..., lenient=True)) to "
        "skip unknown fields with a warning"
    )


def _enum_hint(type_name: str, value: str) -> str:
    try:
        desc = caffe_pb2.DESCRIPTOR.pool.FindEnumTypeByName(type_name)
    except KeyError:
        return ""
    names = list(desc.values_by_name)
    close = difflib.get_close_matches(value.upper(), names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (one of: {', '.join(names)})"


def _check_required(message: Message, root: _Node, filename: str | None) -> None:
    """Caffe's C++ parser rejects missing required fields; Python's does not."""
    if message.IsInitialized():
        return
    missing = message.FindInitializationErrors()
    # "layer[3].clip_param.max" -> the line of the fourth top-level "layer".
    head = re.match(r"(\w+)(?:\[(\d+)\])?", missing[0])
    line = None
    if head:
        same = [n for n in root.children if n.name == head.group(1)]
        index = int(head.group(2) or 0)
        if index < len(same):
            line = same[index].line
    raise PrototxtSyntaxError(
        f"{_place(filename, line)}missing required field{'s' if len(missing) > 1 else ''}: "
        + ", ".join(missing)
    )


# ---------------------------------------------------------------------------
# Source map: a scanner over text that protobuf has already accepted


@dataclass
class _Node:
    """One field occurrence in the text: its name, line and nested fields."""

    name: str
    line: int
    children: list[_Node] = field(default_factory=list)

    def first_lines(self) -> dict[str, int]:
        lines: dict[str, int] = {}
        for child in self.children:
            lines.setdefault(child.name, child.line)
        return lines

    def child(self, name: str) -> _Node | None:
        return next((c for c in self.children if c.name == name), None)


_TOKEN = re.compile(
    r"""
      (?P<skip>\s+|\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)
    | (?P<ident>[A-Za-z_]\w*)
    | (?P<other>[-+.\w]+|.)
    """,
    re.VERBOSE,
)


def _scan(text: str) -> _Node:
    """Build the field tree of a text-format message (names and lines only).

    An identifier is a field name unless it follows ``:`` (then it is an enum,
    bool or inf/nan value) or sits inside a ``[...]`` list.
    """
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    root = _Node("", 1)
    stack = [root]
    last: _Node | None = None
    prev = ""
    brackets = 0
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "skip":
            continue
        token = match.group()
        if brackets:
            brackets += {"[": 1, "]": -1}.get(token, 0)
        elif token == "[":
            brackets = 1
        elif token in ("{", "<"):
            stack.append(last if last is not None else _Node("", 0))
            last = None
        elif token in ("}", ">"):
            if len(stack) > 1:
                stack.pop()
            last = None
        elif kind == "ident" and prev != ":":
            line = bisect.bisect_right(line_starts, match.start())
            last = _Node(token, line)
            stack[-1].children.append(last)
        prev = token
    return root


# ---------------------------------------------------------------------------
# Net upgrades


def _upgrade_net(
    net: caffe_pb2.NetParameter,
    nodes: list[_Node | None] | None,
    root: _Node | None,
    filename: str | None,
) -> tuple[list[int | None], list[dict[str, int]]]:
    """Upgrade ``net`` in place; return the line and field lines of each layer."""
    count = len(net.layer) + len(net.layers)
    if nodes is None or len(nodes) != count:
        nodes = [None] * count
    lines: list[int | None] = [n.line if n is not None else None for n in nodes]
    fields: list[dict[str, int]] = [n.first_lines() if n is not None else {} for n in nodes]

    if len(net.layers):
        if len(net.layer):
            first_v1 = next((n.line for n in nodes if n is not None and n.name == "layers"), None)
            raise NetConfigError(
                f"{_where(filename, first_v1)}the net mixes 'layer' blocks (current format) "
                "with 'layers' blocks (legacy V1); write every layer in one format "
                "(`plite upgrade` converts a file of 'layers' blocks)"
            )
        if any(v1.HasField("layer") for v1 in net.layers):
            log.info("%sUpgrading V0 layer definitions", _where(filename, None))
            lines, fields = _upgrade_v0(net, nodes, lines, fields, filename)
        _upgrade_data_transform(net)
        log.info("%sUpgrading V1 'layers' to 'layer'", _where(filename, None))
        for index, v1 in enumerate(net.layers):
            _add_v1_aliases(fields[index])
            net.layer.add().CopyFrom(_v1_to_layer(v1))
        net.ClearField("layers")

    lines, fields = _upgrade_input(net, root, lines, fields, filename)
    for layer in net.layer:
        # Older BatchNorm nets declared its three statistics blobs with
        # lr_mult 0; Caffe drops them and the layer pins the multipliers itself.
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            del layer.param[:]
    return lines, fields


def _v1_to_layer(v1: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    if v1.HasField("name"):
        layer.name = v1.name
    if v1.HasField("type"):
        layer.type = V1_LAYER_TYPES[caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)]
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.blobs.extend(v1.blobs)
    layer.loss_weight.extend(v1.loss_weight)

    def spec(i: int) -> caffe_pb2.ParamSpec:
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = mode  # STRICT/PERMISSIVE have the same numbers
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay

    for fd, value in v1.ListFields():
        if fd.name.endswith("_param") and fd.message_type is not None:
            getattr(layer, fd.name).CopyFrom(value)
    return layer


def _add_v1_aliases(fields: dict[str, int]) -> None:
    """Point the current field names at the legacy spellings' lines."""
    legacy = [fields[n] for n in ("param", "blobs_lr", "weight_decay", "blob_share_mode") if n in fields]
    if legacy:
        fields["param"] = min(legacy)


def _upgrade_v0(
    net: caffe_pb2.NetParameter,
    nodes: list[_Node | None],
    lines: list[int | None],
    fields: list[dict[str, int]],
    filename: str | None,
) -> tuple[list[int | None], list[dict[str, int]]]:
    """V0 -> V1: fold "padding" layers into their consumer, then map each field."""
    old = list(net.layers)
    # Which layer last produced each blob; -1 for net inputs.
    producer: dict[str, int] = dict.fromkeys(net.input, -1)
    kept: list[tuple[int, caffe_pb2.V1LayerParameter]] = []
    for index, connection in enumerate(old):
        v0 = connection.layer
        place = _where(filename, lines[index])
        if v0.type != "padding" or not connection.HasField("layer"):
            kept.append((index, _clone(connection)))
        for j, blob in enumerate(connection.bottom):
            if blob not in producer:
                raise NetConfigError(
                    f"{place}{_named(v0.name)}bottom '{blob}' "
                    "is produced by no earlier layer or net input"
                )
            source_index = producer[blob]
            if source_index < 0 or old[source_index].layer.type != "padding":
                continue
            pad_layer = old[source_index]
            if v0.type not in ("conv", "pool"):
                raise NetConfigError(
                    f"{place}{_named(v0.name)}a V0 padding layer can only feed a conv "
                    f"or pool layer, not '{v0.type}'"
                )
            if len(connection.bottom) != 1 or len(pad_layer.bottom) != 1 or len(pad_layer.top) != 1:
                raise NetConfigError(
                    f"{place}{_named(v0.name)}V0 padding is only upgraded for one-bottom "
                    "conv/pool layers fed by a one-bottom, one-top padding layer"
                )
            target = kept[-1][1]
            target.layer.pad = pad_layer.layer.pad
            target.bottom[j] = pad_layer.bottom[0]
        for blob in connection.top:
            producer[blob] = index

    net.ClearField("layers")
    new_lines: list[int | None] = []
    new_fields: list[dict[str, int]] = []
    for index, connection in kept:
        if connection.HasField("layer"):
            net.layers.add().CopyFrom(_v0_to_v1(connection, filename, lines[index]))
        else:  # already V1 (a net mixing both); Caffe would drop its settings
            net.layers.add().CopyFrom(connection)
        node = nodes[index]
        layer_fields = dict(fields[index])
        inner = node.child("layer") if node is not None else None
        if inner is not None:
            for name, line in inner.first_lines().items():
                layer_fields.setdefault(name, line)
                target = _V0_FIELDS.get(name, {}).get(connection.layer.type)
                if target:
                    layer_fields.setdefault(target.split(".")[0], line)
                if name in _V0_TRANSFORM:
                    layer_fields.setdefault("transform_param", line)
        new_lines.append(lines[index])
        new_fields.append(layer_fields)
    return new_lines, new_fields


def _named(name: str) -> str:
    return f"layer '{name}': " if name else ""


def _v0_to_v1(
    connection: caffe_pb2.V1LayerParameter, filename: str | None, line: int | None
) -> caffe_pb2.V1LayerParameter:
    v0 = connection.layer
    v1 = caffe_pb2.V1LayerParameter()
    v1.bottom.extend(connection.bottom)
    v1.top.extend(connection.top)
    place = _where(filename, line)
    if v0.HasField("name"):
        v1.name = v0.name
    if v0.HasField("type"):
        if v0.type not in V0_LAYER_TYPES:
            raise NetConfigError(
                f"{place}{_named(v0.name)}unknown V0 layer type '{v0.type}'; known: "
                + ", ".join(sorted(V0_LAYER_TYPES))
            )
        v1.type = caffe_pb2.V1LayerParameter.LayerType.Value(V0_LAYER_TYPES[v0.type])
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    for fd, value in v0.ListFields():
        name = fd.name
        if name in ("name", "type", "blobs", "blobs_lr", "weight_decay"):
            continue
        if name in _V0_TRANSFORM:
            setattr(v1.transform_param, _V0_TRANSFORM[name], value)
            continue
        target = _V0_FIELDS.get(name, {}).get(v0.type)
        if target is None:
            # Caffe logs this and carries on without the field; so do we.
            log.warning(
                "%s%sfield '%s' has no equivalent for V0 type '%s' and is dropped",
                place, _named(v0.name), name, v0.type,
            )
            continue
        _assign(v1, target, value)
    return v1


def _assign(message: Message, dotted: str, value: object) -> None:
    *path, last = dotted.split(".")
    for part in path:
        message = getattr(message, part)
    fd = message.DESCRIPTOR.fields_by_name[last]
    if fd.message_type is not None:
        getattr(message, last).CopyFrom(value)
    elif fd.is_repeated:
        getattr(message, last).append(value)
    else:
        setattr(message, last, value)


def _clone(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _upgrade_data_transform(net: caffe_pb2.NetParameter) -> None:
    """Move legacy preprocessing of V1 data layers into ``transform_param``."""
    for v1 in net.layers:
        type_name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
        param_name = _V1_DATA_PARAMS.get(type_name)
        if param_name is None or not v1.HasField(param_name):
            continue
        param = getattr(v1, param_name)
        for name in _LEGACY_TRANSFORM_FIELDS:
            if param.HasField(name):
                setattr(v1.transform_param, name, getattr(param, name))
                param.ClearField(name)


def _upgrade_input(
    net: caffe_pb2.NetParameter,
    root: _Node | None,
    lines: list[int | None],
    fields: list[dict[str, int]],
    filename: str | None,
) -> tuple[list[int | None], list[dict[str, int]]]:
    """Legacy ``input`` + ``input_shape``/``input_dim`` -> one Input layer, first."""
    if not (len(net.input) or len(net.input_shape) or len(net.input_dim)):
        return lines, fields
    top_lines = root.first_lines() if root is not None else {}
    line = top_lines.get("input") or top_lines.get("input_shape") or top_lines.get("input_dim")
    place = _where(filename, line)
    n_inputs = len(net.input)
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape and len(net.input_shape) != n_inputs:
        raise NetConfigError(
            f"{place}{n_inputs} net input(s) but {len(net.input_shape)} input_shape(s); "
            "give exactly one input_shape per input"
        )
    if has_dim and not has_shape and len(net.input_dim) != 4 * n_inputs:
        raise NetConfigError(
            f"{place}{n_inputs} net input(s) need {4 * n_inputs} input_dim values "
            f"(N, C, H, W each), found {len(net.input_dim)}"
        )
    if has_shape or has_dim:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.top.extend(net.input)
        for i in range(n_inputs):
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [layer, *net.layer]
        net.ClearField("layer")
        net.layer.extend(layers)
        layer_fields = {"name": line, "type": line, "top": line} if line else {}
        shape_line = top_lines.get("input_shape") or top_lines.get("input_dim")
        if shape_line:
            layer_fields["input_param"] = shape_line
        lines = [line, *lines]
        fields = [layer_fields, *fields]
    # Without shapes the inputs are a legacy caffemodel's bookkeeping: drop them.
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
    return lines, fields


# ---------------------------------------------------------------------------
# Solver upgrade


def upgrade_solver_type(
    solver: caffe_pb2.SolverParameter, filename: str | None = None, line: int | None = None
) -> None:
    """Turn the legacy ``solver_type`` enum into ``type`` in place (both given must agree)."""
    if not solver.HasField("solver_type"):
        return
    enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
    new_type = SOLVER_TYPES[enum_name]
    if solver.HasField("type") and solver.type != new_type:
        raise SolverConfigError(
            f"{_where(filename, line)}solver_type: {enum_name} and type: \"{solver.type}\" "
            "disagree; keep only type"
        )
    solver.type = new_type
    solver.ClearField("solver_type")
