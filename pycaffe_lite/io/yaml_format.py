"""YAML nets and solvers: the prototxt's fields and nesting, written in YAML.

The same message, field names and nesting as the prototxt; a repeated field is a YAML
list, or a single value when it holds one item (``bottom: data``); enums are their
names (``pool: MAX``); anchors and merge keys give reusable blocks::

    name: TwoConvs
    x-conv: &conv                 # top-level keys starting with "x-" or "_" are ignored:
      type: Convolution           # a place to define anchors
      param: [{lr_mult: 1}, {lr_mult: 2}]
      convolution_param: {num_output: 16, kernel_size: 3, pad: 1, weight_filler: {type: msra}}
    layer:
      - {name: data, type: Input, top: data, input_param: {shape: {dim: [1, 3, 32, 32]}}}
      - {<<: *conv, name: conv1, bottom: data, top: conv1}
      - {<<: *conv, name: conv2, bottom: conv1, top: conv2}

Merge keys are shallow, as YAML defines them: a layer that sets ``convolution_param``
replaces the anchor's whole ``convolution_param``.  Booleans are ``true``/``false`` only
(YAML 1.2's rule, so a layer named ``no`` stays a string) and ``1e-4`` is a number.

Reading converts the YAML to a plain dict checked field by field against the schema (so
errors say ``file:line``), then builds the message with ``json_format.ParseDict``; each
layer keeps the line of its YAML node.  :func:`convert_file` converts prototxt <-> YAML
losslessly: a round trip gives the same NetParameter / SolverParameter.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..errors import PrototxtSyntaxError
from ..errors import where as _where
from ..proto import caffe_pb2
from . import prototxt as _pt

__all__ = ["convert_file", "message_to_yaml", "read_net_yaml", "read_solver_yaml", "write_yaml"]

log = logging.getLogger(__name__)

_BOOL = "tag:yaml.org,2002:bool"
_FLOAT = "tag:yaml.org,2002:float"
_MAP = "tag:yaml.org,2002:map"
_IGNORED_TOP_LEVEL = ("x-", "_")


# ---------------------------------------------------------------------------
# Loading with line numbers


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict

    def line_of(self, key: str) -> int:
        return getattr(self, "key_lines", {}).get(key, self.line)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's booleans and floats, and mappings that keep lines."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_map(loader: _Loader, node: yaml.MappingNode):
    data = _Map()
    data.line = node.start_mark.line + 1
    yield data
    seen = set()
    for key_node, _ in node.value:
        key = key_node.value
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice in one mapping (give a list instead)", key_node.start_mark
            )
        seen.add(key)
    data.update(loader.construct_mapping(node, deep=True))  # flattens merge keys first
    # Own keys come after merged ones in the flattened node, so they win, as in the dict.
    data.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


_Loader.add_constructor(_MAP, _construct_map)


def _load(text: str, filename: str | None):
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        place = f"{filename or _pt.TEXT_FILENAME}:{mark.line + 1}:{mark.column + 1}: " if mark else _where(filename, None)
        problem = exc.problem or exc.context or str(exc)
        raise PrototxtSyntaxError(f"{place}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise PrototxtSyntaxError(f"{_where(filename or _pt.TEXT_FILENAME, None)}invalid YAML: {exc}") from None
    if data is None:
        data = _Map()
        data.line = 1
    if not isinstance(data, dict):
        raise PrototxtSyntaxError(
            f"{_where(filename or _pt.TEXT_FILENAME, 1)}a YAML net or solver is a mapping of fields "
            f"(name: ..., layer: [...]), not a {type(data).__name__}"
        )
    return data


# ---------------------------------------------------------------------------
# YAML data -> the dict ParseDict takes, checked against the schema


class _Normaliser:
    def __init__(self, filename: str | None, lenient: bool) -> None:
        self.filename = filename or _pt.TEXT_FILENAME
        self.lenient = lenient

    def error(self, line: int | None, message: str) -> PrototxtSyntaxError:
        return PrototxtSyntaxError(f"{_where(self.filename, line)}{message}")

    def message(self, data, desc, line: int | None, top_level: bool = False) -> dict:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise self.error(line, f"{desc.full_name} is a message: give a mapping of its fields, not {data!r}")
        out: dict = {}
        for key, value in data.items():
            key_line = data.line_of(key) if isinstance(data, _Map) else line
            if not isinstance(key, str):
                raise self.error(key_line, f"field names are strings, got {key!r} in {desc.full_name}")
            if top_level and key.startswith(_IGNORED_TOP_LEVEL):
                continue
            fd = desc.fields_by_name.get(key)
            if fd is None:
                if self.lenient:
                    log.warning("%sskipping unknown field '%s' of %s (lenient mode)",
                                _where(self.filename, key_line), key, desc.full_name)
                    continue
                raise self.error(
                    key_line, f"unknown field '{key}' in {desc.full_name}{_pt._field_hint(desc.full_name, key)}"
                )
            if fd.is_repeated:
                items = value if isinstance(value, list) else ([] if value is None else [value])
                out[key] = [self.value(fd, item, key_line) for item in items]
            else:
                if isinstance(value, list):
                    raise self.error(key_line, f"field '{key}' of {desc.full_name} takes one value, not a list")
                out[key] = self.value(fd, value, key_line)
        return out

    def value(self, fd: FieldDescriptor, value, line: int | None):
        where = f"field '{fd.name}' ({fd.containing_type.full_name})"
        if fd.message_type is not None:
            inner_line = value.line if isinstance(value, _Map) else line
            return self.message(value, fd.message_type, inner_line)
        if value is None:
            raise self.error(line, f"{where} has no value")
        t = fd.type
        if t == FieldDescriptor.TYPE_ENUM:
            names = fd.enum_type.values_by_name
            if isinstance(value, str) and value in names:
                return value
            if isinstance(value, int) and not isinstance(value, bool) and value in fd.enum_type.values_by_number:
                return fd.enum_type.values_by_number[value].name
            hint = _pt._enum_hint(fd.enum_type.full_name, str(value))
            raise self.error(line, f"'{value}' is not a value of {fd.enum_type.full_name} for {where}{hint}")
        if t == FieldDescriptor.TYPE_BOOL:
            if isinstance(value, bool):
                return value
            raise self.error(line, f"{where} is a bool: write true or false, not {value!r}")
        if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            number = None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    pass
            if number is None:
                raise self.error(line, f"{where} is a number, not {value!r}")
            if np.isfinite(number):
                return number
            return "NaN" if np.isnan(number) else ("Infinity" if number > 0 else "-Infinity")  # ParseDict's
        if t == FieldDescriptor.TYPE_STRING:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise self.error(line, f"{where} is a string: quote {value!r}")
        if t == FieldDescriptor.TYPE_BYTES:
            raise self.error(line, f"{where} holds bytes, which YAML nets do not support")
        # integer types
        if isinstance(value, bool):
            raise self.error(line, f"{where} is an integer, not {value!r}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                pass
        if not isinstance(value, int):
            raise self.error(line, f"{where} is an integer, not {value!r}")
        if fd.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64) and value < 0:
            raise self.error(line, f"{where} is unsigned, not {value}")
        return value


def _source_tree(data, name: str = "", line: int = 1) -> _pt._Node:
    """The prototxt reader's field tree (names and lines) for a YAML mapping."""
    node = _pt._Node(name, line)
    if not isinstance(data, dict):
        return node
    for key, value in data.items():
        key_line = data.line_of(key) if isinstance(data, _Map) else line
        items = value if isinstance(value, list) else [value]
        for item in items:
            item_line = item.line if isinstance(item, _Map) else key_line
            node.children.append(_source_tree(item, str(key), item_line))
    return node


def _parse(text: str, message: Message, filename: str | None, lenient: bool) -> _pt._Node:
    data = _load(text, filename)
    plain = _Normaliser(filename, lenient).message(data, message.DESCRIPTOR, data.line, top_level=True)
    try:
        json_format.ParseDict(plain, message)
    except json_format.ParseError as exc:  # the normaliser should have caught it; say where anyway
        raise PrototxtSyntaxError(f"{_where(filename or _pt.TEXT_FILENAME, None)}{exc}") from None
    root = _source_tree(data, "", data.line)
    root.children = [c for c in root.children if not c.name.startswith(_IGNORED_TOP_LEVEL)]
    return root


def read_net_yaml(text: str, filename: str | None, *, lenient: bool = False) -> _pt.ParsedNet:
    """A YAML net as a :class:`~pycaffe_lite.io.prototxt.ParsedNet` (upgraded, with layer lines)."""
    net = caffe_pb2.NetParameter()
    root = _parse(text, net, filename, lenient)
    _pt._check_required(net, root, filename)
    nodes = [n for n in root.children if n.name in ("layer", "layers")]
    lines, fields = _pt._upgrade_net(net, nodes, root, filename)
    return _pt.ParsedNet(param=net, filename=filename, layer_lines=lines, layer_fields=fields)


def read_solver_yaml(text: str, filename: str | None, *, lenient: bool = False) -> _pt.ParsedSolver:
    """A YAML solver as a :class:`~pycaffe_lite.io.prototxt.ParsedSolver`."""
    solver = caffe_pb2.SolverParameter()
    root = _parse(text, solver, filename, lenient)
    _pt._check_required(solver, root, filename)
    field_lines = root.first_lines()
    _pt.upgrade_solver_type(solver, filename, field_lines.get("solver_type"))
    for name in ("net_param", "train_net_param"):
        if solver.HasField(name):
            _pt._upgrade_net(getattr(solver, name), None, None, filename)
    for net in solver.test_net_param:
        _pt._upgrade_net(net, None, None, filename)
    return _pt.ParsedSolver(param=solver, filename=filename, field_lines=field_lines)


# ---------------------------------------------------------------------------
# Writing


class _Flow(list):
    """A list written on one line: ``[64, 1, 28, 28]``."""


class _FlowMap(dict):
    """A small mapping written on one line: ``{lr_mult: 1, decay_mult: 1}``."""


class _F32(float):
    """A float32 value, written with the fewest digits that read back to the same float32."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False):
        # Indent a list under its key ("layer:\n  - name: ..."), as people write YAML.
        return super().increase_indent(flow, False)


def _represent_f32(dumper: yaml.SafeDumper, value: _F32):
    if value.is_integer() and abs(value) < 1e15:
        return dumper.represent_int(int(value))  # lr_mult: 1 (read back as the same float)
    text = _float_text(str(np.float32(value)) if np.isfinite(value) else repr(float(value)))
    return dumper.represent_scalar(_FLOAT, text)


def _represent_f64(dumper: yaml.SafeDumper, value: float):
    return dumper.represent_scalar(_FLOAT, _float_text(repr(float(value))))


def _float_text(text: str) -> str:
    """Spell a float so that YAML 1.1 readers too see a float (``1.0e-08``, ``.inf``)."""
    low = text.lower()
    if low in ("inf", "+inf"):
        return ".inf"
    if low == "-inf":
        return "-.inf"
    if low == "nan":
        return ".nan"
    mantissa, e, exponent = low.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if e and exponent[:1] not in "+-":
        exponent = "+" + exponent
    return mantissa + (("e" + exponent) if e else "")


_Dumper.add_representer(_F32, _represent_f32)
_Dumper.add_representer(float, _represent_f64)
_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_Dumper.add_representer(_FlowMap, lambda d, v: d.represent_mapping(_MAP, v.items(), flow_style=True))
_Dumper.add_representer(dict, lambda d, v: d.represent_mapping(_MAP, v.items(), flow_style=False))


def _scalar(fd: FieldDescriptor, value):
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else int(value)
    if fd.type == FieldDescriptor.TYPE_FLOAT:
        return _F32(value)
    if fd.type == FieldDescriptor.TYPE_DOUBLE:
        return float(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        raise PrototxtSyntaxError(f"field '{fd.name}' holds bytes, which YAML nets do not support")
    return value


#: repeated messages always written one item per block, however small
_BLOCK_LISTS = ("layer", "layers", "test_net_param")


def _is_flat(value) -> bool:
    return not isinstance(value, (dict, list)) or isinstance(value, (_Flow, _FlowMap))


def _plain(message: Message):
    out: dict = {}
    for fd, value in message.ListFields():
        if fd.is_repeated:
            if fd.message_type is not None:
                items = [_plain(v) for v in value]
                short = len(items) <= 3 and all(isinstance(v, _FlowMap) for v in items)
                out[fd.name] = _Flow(items) if short and fd.name not in _BLOCK_LISTS else items
            else:
                items = [_scalar(fd, v) for v in value]
                out[fd.name] = items[0] if len(items) == 1 else _Flow(items)
        elif fd.message_type is not None:
            out[fd.name] = _plain(value)
        else:
            out[fd.name] = _scalar(fd, value)
    # Small messages of plain values read best on one line.
    leaves = sum(len(v) if isinstance(v, _Flow) else 1 for v in out.values())
    if all(_is_flat(v) and not isinstance(v, _FlowMap) for v in out.values()) and leaves <= 6:
        return _FlowMap(out)
    return out


def message_to_yaml(message: Message) -> str:
    """A NetParameter or SolverParameter as YAML text (see the module docstring)."""
    plain = _plain(message)
    if isinstance(plain, _FlowMap):
        plain = dict(plain)
    return yaml.dump(plain, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110,
                     allow_unicode=True)


def write_yaml(message: Message, path: str | os.PathLike[str]) -> None:
    """Write ``message`` as YAML, atomically."""
    _pt._write_atomic(Path(path), message_to_yaml(message))


def _is_yaml_path(path) -> bool:
    return str(path).lower().endswith((".yaml", ".yml"))


def _is_solver(path: Path, text: str) -> bool:
    if _is_yaml_path(path):
        data = _load(text, str(path))
        net_fields = set(caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name)
        solver_only = set(caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name) - net_fields
        return any(k in solver_only for k in data)
    return _pt._looks_like_solver(_pt._scan(text))


def convert_file(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Message:
    """``plite convert``: a net or solver, prototxt <-> YAML (by the paths' extensions).

    Legacy (V0/V1) nets are upgraded on the way.  Returns the message written.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    text, _ = _pt._load_source(in_path, None)
    if _is_solver(in_path, text):
        message: Message = _pt.read_solver(in_path).param
    else:
        message = _pt.read_net(in_path).param
    if _is_yaml_path(out_path):
        write_yaml(message, out_path)
    else:
        _pt.write_text(message, out_path)
    return message
