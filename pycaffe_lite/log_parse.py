"""Training logs -> tables and plots (``plite log parse`` / ``plite log plot``).

Reads the lines Caffe's tools read, from our logs and from Caffe's own glog logs alike::

    I0105 10:00:01.000000  4242 solver.cpp:218] Iteration 100 (9.1 iter/s, 11s/100 iters), loss = 0.21
    I0105 10:00:01.000000  4242 solver.cpp:237]     Train net output #0: loss = 0.21 (* 1 = 0.21 loss)
    I0105 10:00:01.000000  4242 sgd_solver.cpp:105] Iteration 100, lr = 0.00992565
    I0105 10:00:02.000000  4242 solver.cpp:330] Iteration 500, Testing net (#0)
    I0105 10:00:02.000000  4242 solver.cpp:397]     Test net output #0: accuracy = 0.97

One row per iteration that printed net outputs: ``NumIters``, ``Seconds``,
``LearningRate`` and one column per output name (``loss``, ``accuracy``...), like Caffe's
``tools/extra/parse_log.py``.  ``Seconds`` counts from the glog timestamp of the
``Solving`` line (the first timestamped line when there is none); glog prints no year,
so a month that goes backwards means a new year.  ``LearningRate`` is the rate printed
for that iteration, else the last one printed before it (the first one for rows before
any).
"""
from __future__ import annotations

import csv
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .errors import DataError, PliteError

__all__ = ["ParsedLog", "parse_log", "plot_log", "save_csv"]

_GLOG = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?\s")
_ITERATION = re.compile(r"Iteration (\d+)")
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|NaN|Inf))"
_TRAIN = re.compile(r"Train net output #(\d+): (\S+) = " + _NUMBER)
_TEST = re.compile(r"Test net output #(\d+): (\S+) = " + _NUMBER)
_LR = re.compile(r"Iteration (\d+), lr = " + _NUMBER)
_CREATED = re.compile(r"^Log file created at: (\d{4})/", re.MULTILINE)
BASE_COLUMNS = ("NumIters", "Seconds", "LearningRate")


@dataclass
class ParsedLog:
    """Rows of a training log: ``train`` and ``test`` lists of dicts (CSV columns)."""

    train: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    train_names: list[str] = field(default_factory=list)
    test_names: list[str] = field(default_factory=list)

    def columns(self, which: str) -> list[str]:
        return [*BASE_COLUMNS, *(self.train_names if which == "train" else self.test_names)]


def _timestamp(match: re.Match, year: int) -> datetime:
    month, day, hh, mm, ss = (int(match.group(i)) for i in range(1, 6))
    frac = match.group(6) or "0"
    micro = int((frac + "000000")[:6])
    return datetime(year, month, day, hh, mm, ss, micro)


def parse_log(path: str | os.PathLike) -> ParsedLog:
    """Parse a Caffe or pycaffe_lite training log.

    Raises
    ------
    DataError
        The file is missing or holds no ``Iteration`` lines.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: no such log file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    lines = text.splitlines()
    created = _CREATED.search(text[:500])  # glog's file header names the year
    year = int(created.group(1)) if created else datetime.fromtimestamp(path.stat().st_mtime).year
    # glog stamps carry no year: take glog's "Log file created at" header, else date the
    # log so that it ends in the file's year; a month that goes backwards is a new year.
    stamps: list[datetime | None] = []
    matches = [_GLOG.match(line) for line in lines]
    months = [int(m.group(1)) for m in matches if m]
    if not created:
        year -= sum(1 for a, b in itertools.pairwise(months) if b < a)
    last_month = months[0] if months else 0
    for m in matches:
        if m is None:
            stamps.append(None)
            continue
        if int(m.group(1)) < last_month:
            year += 1
        last_month = int(m.group(1))
        stamps.append(_timestamp(m, year))
    # The clock starts at "Solving ..." as in Caffe's extract_seconds, else at the first stamp.
    t0 = next((t for t, line in zip(stamps, lines) if t is not None and "Solving" in line), None)
    t0 = t0 or next((t for t in stamps if t is not None), None)

    out = ParsedLog()
    lr_at: dict[int, float] = {}
    iteration = -1
    seconds = math.nan
    rows: dict[str, dict[int, dict]] = {"train": {}, "test": {}}
    for line, stamp in zip(lines, stamps):
        if stamp is not None and t0 is not None:
            seconds = (stamp - t0).total_seconds()
        it = _ITERATION.search(line)
        if it:
            iteration = int(it.group(1))
        lr = _LR.search(line)
        if lr:
            lr_at[int(lr.group(1))] = float(lr.group(2))
            continue
        if iteration < 0:
            continue
        for which, regex, names in (("train", _TRAIN, out.train_names), ("test", _TEST, out.test_names)):
            o = regex.search(line)
            if not o:
                continue
            row = rows[which].get(iteration)
            if row is None:
                row = rows[which][iteration] = {"NumIters": iteration, "Seconds": seconds,
                                                "LearningRate": math.nan}
            name = o.group(2)
            if name not in names:
                names.append(name)
            row[name] = float(o.group(3))
    if iteration < 0:
        raise DataError(f"{path}: no 'Iteration N' lines: is this a Caffe or plite training log?")
    # learning rates: the one printed at the row's iteration, else the last one before it
    known = sorted(lr_at)
    for which in ("train", "test"):
        for it, row in sorted(rows[which].items()):
            if it in lr_at:
                row["LearningRate"] = lr_at[it]
            else:
                before = [k for k in known if k < it]
                if before:
                    row["LearningRate"] = lr_at[before[-1]]
                elif known:
                    row["LearningRate"] = lr_at[known[0]]
        setattr(out, which, [rows[which][k] for k in sorted(rows[which])])
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def save_csv(parsed: ParsedLog, log_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
             ) -> tuple[Path, Path]:
    """Write ``<log name>.train.csv`` and ``<log name>.test.csv`` (to the log's folder by default)."""
    log_path = Path(log_path)
    out_dir = Path(out_dir) if out_dir is not None else log_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for which in ("train", "test"):
        target = out_dir / f"{log_path.name}.{which}.csv"
        columns = parsed.columns(which)
        with open(target, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for row in getattr(parsed, which):
                w.writerow([_cell(row.get(c)) for c in columns])
        written.append(target)
    return written[0], written[1]


PLOT_HINT = "pip install 'pycaffe-lite[plot]'"
_LR_NAMES = ("lr", "learningrate", "learning_rate")


def plot_log(
    log_path: str | os.PathLike,
    out_png: str | os.PathLike,
    x: str = "iters",
    y: list[str] | None = None,
) -> Path:
    """Plot outputs of a training log against iterations or seconds, one panel per quantity.

    Parameters
    ----------
    x : "iters" or "seconds".
    y : quantities to draw: output names (``loss``, ``accuracy``...) and/or ``lr``; each
        shows its train and test series.  Default: every output name, then ``lr``.

    Raises
    ------
    PliteError
        matplotlib is not installed (the ``plot`` extra).
    DataError
        Unknown ``x``, or a ``y`` name the log never prints.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PliteError(f"plotting needs matplotlib, which is not installed: {PLOT_HINT}") from None
    if x not in ("iters", "seconds"):
        raise DataError(f"--x must be 'iters' or 'seconds', not '{x}'")
    parsed = parse_log(log_path)
    names = list(dict.fromkeys(parsed.train_names + parsed.test_names))
    wanted = y or [*names, "lr"]
    for name in wanted:
        if name.lower() not in _LR_NAMES and name not in names:
            raise DataError(
                f"{log_path}: the log prints no output named '{name}'; it has: {', '.join(names) or 'none'} (and lr)"
            )
    xcol = "NumIters" if x == "iters" else "Seconds"
    fig = Figure(figsize=(8, 2.6 * len(wanted) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(wanted), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, wanted):
        is_lr = name.lower() in _LR_NAMES
        col = "LearningRate" if is_lr else name
        for which, rows, style in (("train", parsed.train, "-"), ("test", parsed.test, "o-")):
            pts = [(r[xcol], r[col]) for r in rows if col in r and not math.isnan(r[col])]
            if is_lr and which == "test":
                continue
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, markersize=3,
                        label=f"{which} {'learning rate' if is_lr else name}")
        ax.set_ylabel("learning rate" if is_lr else name)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("iterations" if x == "iters" else "seconds")
    fig.suptitle(Path(log_path).name)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    return out_png
