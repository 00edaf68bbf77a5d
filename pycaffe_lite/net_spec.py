"""NetSpec: write a net in Python and get its prototxt (pycaffe's ``caffe.net_spec``).

::

    from pycaffe_lite.net_spec import NetSpec, layers as L, params as P

    n = NetSpec()
    n.data, n.label = L.Data(source="mnist_train_lmdb", backend=P.Data.LMDB, batch_size=64, ntop=2,
                             transform_param=dict(scale=1 / 256))
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.conv1, n.label)
    print(n.to_proto())          # a caffe.NetParameter; str() of it is prototxt text

``L.<Type>(*bottoms, **params)`` makes a layer of Caffe type ``<Type>``. Its keyword arguments
are, as in pycaffe:

* ``ntop`` (default 1): the number of tops; the call returns one top, a tuple of them, or (0)
  the layer itself. ``in_place=True`` writes the tops over the bottoms.
* a name ending in ``param`` (``transform_param``, ``param``) is a LayerParameter field;
* any other name goes to the layer type's own ``<type>_param`` when that message has the
  field (``kernel_size`` -> ``convolution_param``), else to LayerParameter (``loss_weight``,
  ``include``, ``top``...).  The type -> ``*_param`` table is read from the schema: the field
  whose message is ``<Type>Parameter``.

Values: a dict fills a message, a list fills a repeated field (a list of dicts adds one
message each), a scalar given for a repeated field becomes a one-element list, and an enum
takes its number (``P.Pooling.MAX``) or its name (``"MAX"``).

A layer is named after the NetSpec attribute of its first top; tops that were never assigned
to the NetSpec are named ``<Type><k>`` (``Convolution1``...).
``params``/``P``: ``P.Pooling.MAX`` is ``caffe.PoolingParameter.MAX``.
"""
from __future__ import annotations

import difflib
import functools
from collections import Counter, OrderedDict

from .errors import NetConfigError


@functools.cache
def param_name_dict() -> dict[str, str]:
    """Layer type -> its LayerParameter field, from the schema (``Convolution`` ->
    ``convolution_param``): each ``*_param`` field whose message is ``<Type>Parameter``."""
    from .proto import caffe_pb2

    out = {}
    for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if f.name.endswith("_param") and f.message_type is not None and f.message_type.name.endswith("Parameter"):
            out[f.message_type.name[: -len("Parameter")]] = f.name
    return out


def _assign(message, name: str, value, path: str) -> None:
    """Set field ``name`` of ``message`` from a Python value (dicts/lists recursively)."""
    desc = message.DESCRIPTOR
    field = desc.fields_by_name.get(name)
    where = f"{path}.{name}" if path else name
    if field is None:
        known = ", ".join(sorted(desc.fields_by_name))
        raise NetConfigError(f"{where}: {desc.name} has no field '{name}' (its fields: {known})")
    repeated = field.is_repeated
    is_message = field.message_type is not None
    if repeated:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        target = getattr(message, name)
        for i, v in enumerate(values):
            if is_message:
                if not isinstance(v, dict):
                    raise NetConfigError(f"{where}[{i}]: {field.message_type.name} needs a dict, got {v!r}")
                item = target.add()
                for k, sub in v.items():
                    _assign(item, k, sub, f"{where}[{i}]")
            else:
                _set_scalar(message, field, _enum_value(field, v, where), where, append=True)
        return
    if is_message:
        if not isinstance(value, dict):
            raise NetConfigError(f"{where}: {field.message_type.name} needs a dict, got {value!r}")
        sub = getattr(message, name)
        sub.SetInParent()
        for k, v in value.items():
            _assign(sub, k, v, where)
        return
    _set_scalar(message, field, _enum_value(field, value, where), where, append=False)


def _enum_value(field, value, where: str):
    if field.enum_type is None or not isinstance(value, str):
        return value
    v = field.enum_type.values_by_name.get(value)
    if v is None:
        known = ", ".join(field.enum_type.values_by_name)
        raise NetConfigError(f"{where}: '{value}' is not a value of {field.enum_type.name} ({known})")
    return v.number


def _set_scalar(message, field, value, where: str, append: bool) -> None:
    try:
        if append:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    except (TypeError, ValueError) as e:
        raise NetConfigError(f"{where}: cannot set {value!r}: {e}") from None


class Top:
    """Output ``n`` of a layer call (a blob of the net being written)."""

    __slots__ = ("fn", "n")

    def __init__(self, fn: Function, n: int) -> None:
        self.fn = fn
        self.n = n

    def to_proto(self):
        """The NetParameter of the layers this top depends on."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames) -> None:
        self.fn._to_proto(layers, names, autonames)

    def __repr__(self) -> str:
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """One layer call ``L.<Type>(*inputs, **params)``, turned into a LayerParameter by to_proto."""

    def __init__(self, type_name: str, inputs, params: dict) -> None:
        self.type_name = type_name
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise NetConfigError(
                    f"L.{type_name}: bottom {i} is {type(inp).__name__} {inp!r}, not a layer output; pass the tops "
                    "of other layers (n.data, n.conv1...)"
                )
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = int(self.params.pop("ntop", 1))
        self.in_place = bool(self.params.pop("in_place", False))
        self.tops = tuple(Top(self, i) for i in range(self.ntop))

    def _top_name(self, top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]

    def _name(self, names: dict, autonames: Counter) -> str:
        if self not in names:
            if self.ntop > 0:
                names[self] = self._top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        from .proto import caffe_pb2

        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._top_name(t, names, autonames) for t in self.tops)
        layer.name = self._name(names, autonames)
        own = param_name_dict().get(self.type_name)
        where = f"layer '{layer.name}' ({self.type_name})"
        for key, value in self.params.items():
            if not key.endswith("param") and own and key in getattr(layer, own).DESCRIPTOR.fields_by_name:
                _assign(getattr(layer, own), key, value, f"{where}: {own}")
            elif key in layer.DESCRIPTOR.fields_by_name:
                _assign(layer, key, value, f"{where}:")
            else:
                fields = list(layer.DESCRIPTOR.fields_by_name)
                if own:
                    fields += list(getattr(layer, own).DESCRIPTOR.fields_by_name)
                    msg = f"neither {own} nor LayerParameter has that field"
                else:
                    msg = (f"LayerParameter has no such field and type '{self.type_name}' has no *_param of its "
                           f"own; give it inside the *_param the type reads, e.g. convolution_param=dict({key}=...)")
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise NetConfigError(f"{where}: unknown parameter '{key}': {msg}{hint}")
        layers[self] = layer

    def __repr__(self) -> str:
        return f"<L.{self.type_name} with {len(self.inputs)} bottoms, {self.ntop} tops>"


class NetSpec:
    """Tops by name: ``n.conv1 = L.Convolution(n.data, ...)``; ``n.to_proto()`` writes the net.

    Attribute and item access are the same (``n["conv1"]``); names keep assignment order.
    """

    def __init__(self) -> None:
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value) -> None:
        if not isinstance(value, (Top, Function)):
            raise NetConfigError(f"NetSpec.{name}: assign a layer output (L.<Type>(...)), not {type(value).__name__}")
        self.tops[name] = value

    def __getattr__(self, name: str):
        tops = self.__dict__.get("tops", {})
        if name in tops:
            return tops[name]
        raise AttributeError(f"NetSpec has no top '{name}' (tops so far: {', '.join(tops) or 'none'})")

    __setitem__ = __setattr__

    def __getitem__(self, name: str):
        return self.__getattr__(name)

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def keys(self) -> list[str]:
        return list(self.tops)

    def vals(self) -> list:
        return list(self.tops.values())

    def update(self, name: str, value) -> None:
        self.__setattr__(name, value)

    def to_proto(self):
        """A ``caffe.NetParameter`` with every layer the named tops need, in dependency order."""
        from .proto import caffe_pb2

        names = {}
        for name, top in self.tops.items():
            names[top] = name
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops):
    """A NetParameter of the layers that ``tops`` depend on (tops named ``<Type><k>``)."""
    from .proto import caffe_pb2

    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Layers:
    """``L.<Type>(*bottoms, **params)``: a layer call of Caffe type ``<Type>`` (see the module doc)."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*bottoms, **params):
            fn = Function(type_name, bottoms, params)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops

        layer_fn.__name__ = type_name
        return layer_fn


class _EnumValues:
    """The enum values of one ``caffe.<Name>Parameter`` message (``P.Pooling.MAX``)."""

    def __init__(self, message) -> None:
        self._message = message

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(self._message, name)
        except AttributeError:
            desc = self._message.DESCRIPTOR
            known = [v.name for e in desc.enum_types for v in e.values]
            raise AttributeError(f"caffe.{desc.name} has no value '{name}' (its enum values: "
                                 f"{', '.join(known) or 'none'})") from None


class Parameters:
    """``P.<Name>.<VALUE>``: the enum values of ``caffe.<Name>Parameter``."""

    def __getattr__(self, name: str):
        from .proto import caffe_pb2

        if name.startswith("__"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, name + "Parameter", None)
        if message is None:
            raise AttributeError(f"the schema has no message '{name}Parameter'")
        return _EnumValues(message)


layers = Layers()
params = Parameters()
