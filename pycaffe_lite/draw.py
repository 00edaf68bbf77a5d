"""Net diagrams (``plite draw``): DOT text, and PNG/SVG without needing Graphviz.

The picture follows Caffe's ``draw_net``: each layer is a filled box labelled with its
name, ``(Type)`` and its main settings (kernel size / stride / pad for convolution and
pooling, the pooling method, ``num_output``); each blob is a grey octagon; edges run
bottom blob -> layer -> top blob.  Colours are draw_net's: convolution red, pooling
orange, inner product purple, in-place neuron layers light green, other layers blue.
An in-place layer (top == bottom) gets a second node for the blob it rewrites, so the
graph stays acyclic and reads left to right.

PNG and SVG come from Graphviz's ``dot`` when it is on PATH; otherwise from a small
layered layout drawn here (ranks by longest path, dummy nodes on long edges, barycenter
ordering) with Pillow for PNG and plain SVG elements for SVG.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError, NetConfigError

__all__ = ["RANKDIRS", "build_graph", "draw_net_to_file", "net_to_dot", "render_png", "render_svg"]

log = logging.getLogger(__name__)

RANKDIRS = ("LR", "TB", "BT", "RL")
PHASES = {"TRAIN": 0, "TEST": 1, "ALL": None}

# draw_net's palette
LAYER_COLOR = "#6495ED"
NEURON_COLOR = "#90EE90"
BLOB_COLOR = "#E0E0E0"
TYPE_COLORS = {
    "Convolution": "#FF5050",
    "Deconvolution": "#FF5050",
    "Pooling": "#FF9900",
    "InnerProduct": "#CC33FF",
}


@dataclass
class Node:
    id: str
    kind: str  # "layer", "blob" or "dummy"
    label: list[str]
    color: str = LAYER_COLOR
    # layout results (top-left based, in pixels)
    rank: int = 0
    order: float = 0.0
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0
    y: float = 0.0


@dataclass
class Graph:
    name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------
# The graph


def _first(values, default=None):
    return values[0] if len(values) else default


def _hw(param, name: str, default):
    """``kernel size: 5`` or ``kernel size: 3x5`` from Caffe's repeated / _h, _w fields."""
    h_field, w_field = f"{name}_h", f"{name}_w"
    if param.HasField(h_field) or param.HasField(w_field):
        return f"{getattr(param, h_field)}x{getattr(param, w_field)}"
    size_field = {"kernel": "kernel_size", "stride": "stride", "pad": "pad"}[name]
    value = getattr(param, size_field)
    if hasattr(value, "__len__"):
        if len(value) > 1:
            return "x".join(str(v) for v in value)
        return str(_first(value, default))
    return str(value if param.HasField(size_field) else default)


def layer_label(layer) -> list[str]:
    """draw_net's label lines for a LayerParameter."""
    lines = [layer.name, f"({layer.type})"]
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        lines += [f"kernel size: {_hw(p, 'kernel', 1)}", f"stride: {_hw(p, 'stride', 1)}",
                  f"pad: {_hw(p, 'pad', 0)}"]
        if p.group > 1:
            lines.append(f"group: {p.group}")
        if len(p.dilation) and any(d > 1 for d in p.dilation):
            lines.append("dilation: " + "x".join(str(d) for d in p.dilation))
        lines.append(f"num_output: {p.num_output}")
    elif layer.type == "Pooling":
        p = layer.pooling_param
        method = type(p).PoolMethod.Name(p.pool)
        if p.global_pooling:
            lines += [f"pool type: {method}", "global"]
        else:
            lines += [f"pool type: {method}", f"kernel size: {_hw(p, 'kernel', 0)}",
                      f"stride: {_hw(p, 'stride', 1)}", f"pad: {_hw(p, 'pad', 0)}"]
    elif layer.type == "InnerProduct":
        lines.append(f"num_output: {layer.inner_product_param.num_output}")
    elif layer.type == "Data" and layer.data_param.batch_size:
        lines.append(f"batch size: {layer.data_param.batch_size}")
    return lines


def _filter_phase(net_param, phase: int | None):
    from .net import layer_included
    from .proto import caffe_pb2

    if phase is None:
        return list(net_param.layer)
    state = caffe_pb2.NetState(phase=phase)
    return [layer for layer in net_param.layer if layer_included(state, layer)]


def build_graph(net_param, phase: int | None = None) -> Graph:
    """Layers and blobs of ``net_param`` (optionally one phase's) as a DAG."""
    g = Graph(net_param.name or "net")
    version: dict[str, str] = {}  # blob name -> id of its current node
    count: dict[str, int] = {}

    def blob_node(name: str, new: bool) -> str:
        if name in version and not new:
            return version[name]
        k = count.get(name, 0)
        count[name] = k + 1
        node_id = f"{name}_blob" if k == 0 else f"{name}_blob_{k}"
        g.nodes[node_id] = Node(node_id, "blob", [name], BLOB_COLOR)
        version[name] = node_id
        return node_id

    for i, layer in enumerate(_filter_phase(net_param, phase)):
        node_id = f"{layer.name}_{layer.type}"
        if node_id in g.nodes:
            node_id = f"{node_id}_{i}"
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        color = NEURON_COLOR if in_place else TYPE_COLORS.get(layer.type, LAYER_COLOR)
        g.nodes[node_id] = Node(node_id, "layer", layer_label(layer), color)
        for b in layer.bottom:
            g.edges.append((blob_node(b, False), node_id))
        for t in layer.top:
            # An in-place top is a new node; a blob two layers produce (a TRAIN and a TEST
            # data layer, say) stays one node, as in draw_net.
            g.edges.append((node_id, blob_node(t, t in layer.bottom)))
    return g


def _dot_escape(text: str) -> str:
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    for ch in "{}|<>":  # record-shape metacharacters
        out = out.replace(ch, "\\" + ch)
    return out


def net_to_dot(net_param, rankdir: str = "LR", phase: int | None = None) -> str:
    """The net as Graphviz DOT text (what ``dot`` or any viewer of .dot files draws)."""
    _check_rankdir(rankdir)
    g = build_graph(net_param, phase)
    lines = [f'digraph "{_dot_escape(g.name)}" {{', f"  graph [rankdir={rankdir}];",
             '  node [fontname="Helvetica", fontsize=10];']
    for n in g.nodes.values():
        label = "\\n".join(_dot_escape(s) for s in n.label)
        shape = "octagon" if n.kind == "blob" else "record"
        lines.append(f'  "{_dot_escape(n.id)}" [shape={shape}, style=filled, fillcolor="{n.color}", '
                     f'label="{label}"];')
    for a, b in g.edges:
        lines.append(f'  "{_dot_escape(a)}" -> "{_dot_escape(b)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _check_rankdir(rankdir: str) -> None:
    if rankdir not in RANKDIRS:
        raise NetConfigError(f"rankdir must be one of {', '.join(RANKDIRS)}, not '{rankdir}'")


# ---------------------------------------------------------------------------
# Layout (for rendering without Graphviz)

PAD_X, PAD_Y = 10, 6  # inside a node
GAP_IN_RANK = 18  # between neighbours of one rank
GAP_RANKS = 46  # between ranks
MARGIN = 16
FONT_SIZE = 13


def _font(size: int = FONT_SIZE):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:
        return ImageFont.load_default()


def _text_size(font, lines: list[str]) -> tuple[float, float, float]:
    """(width, height, line height) of centred multi-line text."""
    widths, line_h = [], 0.0
    for s in lines:
        left, _, right, bottom = font.getbbox(s or " ")
        widths.append(right - left)
        line_h = max(line_h, bottom)
    line_h += 3
    return max(widths, default=0), line_h * len(lines), line_h


def layout(g: Graph, rankdir: str = "LR", font=None) -> tuple[float, float, list[list[tuple[float, float]]]]:
    """Place the nodes; return (canvas width, height, one polyline per edge)."""
    _check_rankdir(rankdir)
    font = font or _font()
    horizontal = rankdir in ("LR", "RL")
    for n in g.nodes.values():
        tw, th, _ = _text_size(font, n.label)
        n.w, n.h = tw + 2 * PAD_X + (12 if n.kind == "blob" else 0), th + 2 * PAD_Y
    # ranks: longest path from the sources
    preds: dict[str, list[str]] = {k: [] for k in g.nodes}
    succs: dict[str, list[str]] = {k: [] for k in g.nodes}
    for a, b in g.edges:
        preds[b].append(a)
        succs[a].append(b)
    for n in g.nodes.values():  # node insertion order is a topological order
        n.rank = max((g.nodes[p].rank + 1 for p in preds[n.id]), default=0)
    # pull sources (e.g. a label blob) down next to their first consumer
    for n in reversed(list(g.nodes.values())):
        if not preds[n.id] and succs[n.id]:
            n.rank = min(g.nodes[s].rank for s in succs[n.id]) - 1
    # dummy nodes so that every edge joins neighbouring ranks
    chains: list[list[str]] = []
    nodes = dict(g.nodes)
    for k, (a, b) in enumerate(g.edges):
        chain = [a]
        for r in range(nodes[a].rank + 1, nodes[b].rank):
            d = Node(f"_dummy{k}_{r}", "dummy", [], rank=r, w=2, h=2)
            nodes[d.id] = d
            chain.append(d.id)
        chain.append(b)
        chains.append(chain)
    up: dict[str, list[str]] = {k: [] for k in nodes}
    down: dict[str, list[str]] = {k: [] for k in nodes}
    for chain in chains:
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)
    ranks: dict[int, list[Node]] = {}
    for n in nodes.values():
        ranks.setdefault(n.rank, []).append(n)
    rank_ids = sorted(ranks)
    for r in rank_ids:
        for i, n in enumerate(ranks[r]):
            n.order = i
    # barycenter ordering sweeps, keeping the order with the fewest edge crossings
    best = (_crossings(ranks, rank_ids, down, nodes), {r: list(ranks[r]) for r in rank_ids})
    for sweep in range(8):
        seq = rank_ids[1:] if sweep % 2 == 0 else rank_ids[-2::-1]
        for r in seq:
            nbrs = up if sweep % 2 == 0 else down
            for n in ranks[r]:
                ns = nbrs[n.id]
                if ns:
                    n.order = sum(nodes[m].order for m in ns) / len(ns)
            ranks[r].sort(key=lambda n: n.order)
            for i, n in enumerate(ranks[r]):
                n.order = i
        crossings = _crossings(ranks, rank_ids, down, nodes)
        if crossings < best[0]:
            best = (crossings, {r: list(ranks[r]) for r in rank_ids})
    ranks = best[1]
    for r in rank_ids:
        for i, n in enumerate(ranks[r]):
            n.order = i

    # along = size in the rank direction, across = size within a rank
    def along(n: Node) -> float:
        return n.w if horizontal else n.h

    def across(n: Node) -> float:
        return n.h if horizontal else n.w

    # positions across: centre each node on its neighbours, then push overlaps apart
    pos: dict[str, float] = {}
    for r in rank_ids:
        c = 0.0
        for n in ranks[r]:
            pos[n.id] = c + across(n) / 2
            c += across(n) + GAP_IN_RANK
    for sweep in range(8):
        seq = rank_ids[1:] if sweep % 2 == 0 else rank_ids[-2::-1]
        nbrs = up if sweep % 2 == 0 else down
        for r in seq:
            row = ranks[r]
            want = [sum(pos[m] for m in nbrs[n.id]) / len(nbrs[n.id]) if nbrs[n.id] else pos[n.id] for n in row]
            # left to right with the minimum separation, then right to left
            placed = []
            for i, n in enumerate(row):
                p = want[i]
                if i:
                    p = max(p, placed[-1] + (across(row[i - 1]) + across(n)) / 2 + GAP_IN_RANK)
                placed.append(p)
            for i in range(len(row) - 2, -1, -1):
                limit = placed[i + 1] - (across(row[i + 1]) + across(row[i])) / 2 - GAP_IN_RANK
                placed[i] = min(placed[i], limit)
            for n, p in zip(row, placed):
                pos[n.id] = p
    lo = min(pos[n.id] - across(n) / 2 for n in nodes.values())
    # positions along: one band per rank, as thick as its thickest node
    band_start, c = {}, 0.0
    for r in range(rank_ids[0], rank_ids[-1] + 1):
        band_start[r] = c
        thickness = max((along(n) for n in ranks.get(r, [])), default=0)
        c += thickness + GAP_RANKS
    total_along = c - GAP_RANKS
    thickness_of = {r: max((along(n) for n in ranks.get(r, [])), default=0) for r in band_start}
    total_across = max(pos[n.id] + across(n) / 2 for n in nodes.values()) - lo
    for n in nodes.values():
        a = band_start[n.rank] + (thickness_of[n.rank] - along(n)) / 2
        b = pos[n.id] - lo - across(n) / 2
        if rankdir in ("BT", "RL"):
            a = total_along - a - along(n)
        n.x, n.y = (a, b) if horizontal else (b, a)
        n.x += MARGIN
        n.y += MARGIN
    width = (total_along if horizontal else total_across) + 2 * MARGIN
    height = (total_across if horizontal else total_along) + 2 * MARGIN

    # edges: leave the source on its far side, enter the target on its near side
    def port(n: Node, out: bool) -> tuple[float, float]:
        cx, cy = n.x + n.w / 2, n.y + n.h / 2
        forward = rankdir in ("LR", "TB")
        side = 1 if (out == forward) else -1
        if horizontal:
            return cx + side * n.w / 2, cy
        return cx, cy + side * n.h / 2

    polylines = []
    for chain in chains:
        pts = [port(nodes[chain[0]], True)]
        pts += [(nodes[d].x + 1, nodes[d].y + 1) for d in chain[1:-1]]
        pts.append(port(nodes[chain[-1]], False))
        polylines.append(pts)
    return width, height, polylines


def _crossings(ranks, rank_ids, down, nodes) -> int:
    """Edge crossings between neighbouring ranks for the current order."""
    order = {n.id: i for r in rank_ids for i, n in enumerate(ranks[r])}
    total = 0
    for r in rank_ids:
        pairs = sorted((order[n.id], order[m]) for n in ranks[r] for m in down[n.id])
        for i in range(len(pairs)):
            for j in range(i + 1, len(pairs)):
                if pairs[i][0] < pairs[j][0] and pairs[i][1] > pairs[j][1]:
                    total += 1
    return total


def _octagon(n: Node, cut: float = 8.0) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = n.x, n.y, n.x + n.w, n.y + n.h
    c = min(cut, n.h / 3, n.w / 3)
    return [(x0 + c, y0), (x1 - c, y0), (x1, y0 + c), (x1, y1 - c), (x1 - c, y1), (x0 + c, y1),
            (x0, y1 - c), (x0, y0 + c)]


def _arrow_head(p0, p1, size: float = 8.0):
    import math

    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    bx, by = p1[0] - ux * size, p1[1] - uy * size
    return [p1, (bx - uy * size * 0.45, by + ux * size * 0.45), (bx + uy * size * 0.45, by - ux * size * 0.45)]


def render_png(g: Graph, path: str | os.PathLike, rankdir: str = "LR", scale: float = 1.0) -> None:
    """Draw the graph with Pillow (no Graphviz needed)."""
    from PIL import Image, ImageDraw

    font = _font(round(FONT_SIZE * scale))
    w, h, polylines = layout(g, rankdir, font)
    img = Image.new("RGB", (max(1, round(w)), max(1, round(h))), "white")
    draw = ImageDraw.Draw(img)
    for pts in polylines:
        draw.line(pts, fill="#333333", width=max(1, round(scale)))
        draw.polygon(_arrow_head(pts[-2], pts[-1], 8 * scale), fill="#333333")
    for n in g.nodes.values():
        box = [n.x, n.y, n.x + n.w, n.y + n.h]
        if n.kind == "blob":
            draw.polygon(_octagon(n, 8 * scale), fill=BLOB_COLOR, outline="#555555")
        else:
            draw.rounded_rectangle(box, radius=4 * scale, fill=n.color, outline="#333333")
        _, th, line_h = _text_size(font, n.label)
        y = n.y + (n.h - th) / 2
        for i, s in enumerate(n.label):
            left, _, right, _ = font.getbbox(s or " ")
            # the name in bold-ish black, the rest a little lighter
            draw.text((n.x + (n.w - (right - left)) / 2 - left, y + i * line_h), s,
                      fill="#000000" if i == 0 else "#1a1a1a", font=font)
    img.save(os.fspath(path))


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def render_svg(g: Graph, path: str | os.PathLike, rankdir: str = "LR") -> None:
    """Write the graph as SVG from the same layout (no Graphviz needed)."""
    font = _font()
    w, h, polylines = layout(g, rankdir, font)
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
            f'viewBox="0 0 {w:.0f} {h:.0f}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
            f'font-size="{FONT_SIZE}">'), f"<title>{_xml(g.name)}</title>",
           '<rect width="100%" height="100%" fill="white"/>']
    for pts in polylines:
        out.append('<polyline fill="none" stroke="#333333" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        out.append('<polygon fill="#333333" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in _arrow_head(pts[-2], pts[-1])) + '"/>')
    for n in g.nodes.values():
        if n.kind == "blob":
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in _octagon(n))
            out.append(f'<polygon fill="{BLOB_COLOR}" stroke="#555555" points="{points}"/>')
        else:
            out.append(f'<rect x="{n.x:.1f}" y="{n.y:.1f}" width="{n.w:.1f}" height="{n.h:.1f}" rx="4" '
                       f'fill="{n.color}" stroke="#333333"/>')
        _, th, line_h = _text_size(font, n.label)
        y = n.y + (n.h - th) / 2
        for i, s in enumerate(n.label):
            out.append(f'<text x="{n.x + n.w / 2:.1f}" y="{y + (i + 0.8) * line_h:.1f}" '
                       f'text-anchor="middle">{_xml(s)}</text>')
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------
# Files


def draw_net_to_file(
    net_param,
    path: str | os.PathLike,
    rankdir: str = "LR",
    phase: int | None = None,
    use_graphviz: bool | None = None,
) -> str:
    """Write the diagram to ``path``: ``.dot``/``.gv`` -> DOT text, ``.png``/``.svg`` -> image.

    Parameters
    ----------
    net_param : caffe_pb2.NetParameter
    path : output file; its extension picks the format.
    rankdir : "LR" (default, like draw_net), "TB", "BT" or "RL".
    phase : 0 (TRAIN), 1 (TEST) or None (every layer).
    use_graphviz : None -> use ``dot`` when it is on PATH; False -> always the built-in renderer.

    Returns
    -------
    str
        What drew it: ``"dot"``, ``"graphviz"`` or ``"pillow"``/``"svg"`` (built in).
    """
    _check_rankdir(rankdir)
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext in ("dot", "gv", "txt"):
        path.write_text(net_to_dot(net_param, rankdir, phase), encoding="utf-8")
        return "dot"
    if ext not in ("png", "svg"):
        raise DataError(f"{path}: unknown diagram format '.{ext}'; use .png, .svg or .dot")
    dot = shutil.which("dot") if use_graphviz in (None, True) else None
    if dot:
        text = net_to_dot(net_param, rankdir, phase)
        result = subprocess.run([dot, f"-T{ext}", "-o", str(path)], input=text, text=True,
                                capture_output=True, check=False, timeout=120)
        if result.returncode == 0:
            return "graphviz"
        log.warning("Graphviz dot failed (%s); drawing with the built-in renderer", result.stderr.strip())
    g = build_graph(net_param, phase)
    if ext == "png":
        render_png(g, path, rankdir)
        return "pillow"
    render_svg(g, path, rankdir)
    return "svg"
