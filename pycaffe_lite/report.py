"""`plite test --report`: a classifier's confusion matrix, per-class scores and the
information-theoretic measures between the targets T and the predictions Y.

All entropies are in **bits** (log base 2).  With ``M[t, y]`` the confusion matrix (rows: target
class t, columns: predicted class y = argmax of the probabilities) over N samples,
``P(t, y) = M[t, y] / N`` and its marginals ``P(t)``, ``P(y)``:

============================  ==================================================================
joint entropy                 H(T,Y) = -sum P(t,y) log2 P(t,y)
marginal entropies            H(T), H(Y) of P(t), P(y)
mutual information            I(T;Y) = H(T) + H(Y) - H(T,Y)
conditional entropies         H(Y|T) = H(T,Y) - H(T);  H(T|Y) = H(T,Y) - H(Y)
normalised MI                 NMI = I(T;Y) / sqrt(H(T) H(Y)) (Strehl & Ghosh 2002; 0 when either
                              entropy is 0), and U = I(T;Y) / H(T), the fraction of the targets'
                              information the predictions recover (Theil's uncertainty coefficient)
cross-entropy                 CE = mean over samples of -log2 p(t_i | x_i), bits per sample (the
                              SoftmaxWithLoss value divided by ln 2); p clamped at 1e-20 as Caffe's
                              log-loss threshold does
KL divergence                 KL(P_T || Q) = sum_c P_T(c) log2(P_T(c) / Q(c)), P_T the targets'
                              class frequencies and Q(c) = mean_i p(c | x_i) the mean predicted
                              class distribution: how far the net's average belief is from the
                              class priors (0 for a net whose mean output matches them)
============================  ==================================================================

Precision of class c = M[c, c] / sum_t M[t, c], recall = M[c, c] / sum_y M[c, y], F1 their
harmonic mean 2 M[c, c] / (predicted c + target c), so 0 when either is 0; a 0/0 (a class never
predicted, or absent) is undefined: NaN, printed ``-``, left out of the macro averages.

Rejection at threshold tau: a sample whose top probability is below tau is rejected; the
*rejection*, *error* and *correct recognition* rates are the fractions of all N samples that are
rejected, accepted and wrong, accepted and right (they sum to 1); ``accepted accuracy`` is
correct / (correct + error).

Which blobs: by default the bottoms of the net's Accuracy layer (else SoftmaxWithLoss layer):
scores, then labels, when all such layers agree; ``--scores`` / ``--labels`` choose otherwise.
Scores written by a Softmax layer, or whose rows are non-negative and sum to 1, are taken as
probabilities; others (logits, e.g. the ``ip2`` that SoftmaxWithLoss reads) go through a softmax.
Samples with the layer's ``ignore_label`` are left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError, NetConfigError

#: Caffe's threshold inside the log of a probability (kLOG_THRESHOLD)
LOG_THRESHOLD = 1e-20

SCORE_LAYERS = ("Accuracy", "SoftmaxWithLoss")


# ------------------------------------------------------------------ measures
def entropy(p: np.ndarray) -> float:
    """Shannon entropy in bits of a probability table (any shape; zeros contribute 0)."""
    p = np.asarray(p, np.float64).ravel()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``M[t, y]``: how many samples of target class t were predicted as y."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (np.asarray(targets, np.int64), np.asarray(predictions, np.int64)), 1)
    return m


def information_measures(confusion: np.ndarray) -> dict[str, float]:
    """H(T,Y), H(T), H(Y), I(T;Y), H(Y|T), H(T|Y), NMI and U (bits) of a confusion matrix."""
    m = np.asarray(confusion, np.float64)
    n = m.sum()
    if n <= 0:
        raise DataError("the confusion matrix is empty: no samples to measure")
    joint = m / n
    h_ty, h_t, h_y = entropy(joint), entropy(joint.sum(axis=1)), entropy(joint.sum(axis=0))
    mi = max(h_t + h_y - h_ty, 0.0)  # >= 0 in exact arithmetic; rounding may dip below
    return {
        "H(T,Y)": h_ty, "H(T)": h_t, "H(Y)": h_y, "I(T;Y)": mi,
        "H(Y|T)": h_ty - h_t, "H(T|Y)": h_ty - h_y,
        "NMI": mi / math.sqrt(h_t * h_y) if h_t > 0 and h_y > 0 else 0.0,
        "U": mi / h_t if h_t > 0 else 0.0,
    }


def per_class(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class (NaN where undefined)."""
    m = np.asarray(confusion, np.float64)
    tp = np.diag(m)
    predicted, support = m.sum(axis=0), m.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / predicted
        recall = tp / support
        # 2PR/(P+R) written with counts: defined (0) whenever the class is present or predicted
        f1 = 2 * tp / (predicted + support)
    return precision, recall, f1


def cross_entropy(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean of -log2 p(t_i | x_i) over the samples, in bits."""
    p = np.asarray(probs, np.float64)[np.arange(len(targets)), np.asarray(targets, np.int64)]
    return float(-np.log2(np.maximum(p, LOG_THRESHOLD)).mean())


def kl_divergence(probs: np.ndarray, targets: np.ndarray) -> float:
    """KL(target class frequencies || mean predicted class distribution), in bits."""
    probs = np.asarray(probs, np.float64)
    p_t = np.bincount(np.asarray(targets, np.int64), minlength=probs.shape[1]) / len(targets)
    q = np.maximum(probs.mean(axis=0), LOG_THRESHOLD)
    keep = p_t > 0
    return float((p_t[keep] * np.log2(p_t[keep] / q[keep])).sum())


def rejection_rates(probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
    """Rejection, error and correct-recognition rates (fractions of all samples) at ``threshold``."""
    probs = np.asarray(probs)
    top = probs.max(axis=1)
    accepted = top >= threshold
    right = probs.argmax(axis=1) == np.asarray(targets)
    n = len(targets)
    correct = int((accepted & right).sum())
    error = int((accepted & ~right).sum())
    return {"threshold": float(threshold), "rejection": (n - correct - error) / n, "error": error / n,
            "correct": correct / n,
            "accepted_accuracy": correct / (correct + error) if correct + error else float("nan")}


def parse_thresholds(items) -> list[float]:
    """``["0.5", "0.9,0.99"]`` -> ``[0.5, 0.9, 0.99]``; each must be a probability in [0, 1]."""
    out = []
    for text in (t for item in items or [] for t in str(item).split(",") if t.strip()):
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"--reject-threshold '{text}' is not a number; give probabilities such as 0.5 0.9") from None
        if not 0.0 <= value <= 1.0:
            raise DataError(f"--reject-threshold {text} is not a probability: give values in [0, 1] (a sample is "
                            "rejected when its top probability is below the threshold)")
        out.append(value)
    return out


# ------------------------------------------------------------------ the report
@dataclass
class Report:
    """Everything ``plite test --report`` prints (see the module docstring for definitions)."""

    confusion: np.ndarray
    accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    information: dict[str, float]
    cross_entropy: float
    kl_divergence: float
    rejection: list[dict[str, float]] = field(default_factory=list)
    scores_blob: str = ""
    labels_blob: str = ""
    ignored: int = 0

    @property
    def num_samples(self) -> int:
        return int(self.confusion.sum())

    def format(self) -> str:
        return format_report(self)


def evaluate(probs: np.ndarray, targets: np.ndarray, thresholds=(), **names) -> Report:
    """The :class:`Report` of class probabilities ``probs`` (N, C) against integer ``targets`` (N,)."""
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets, np.int64)
    if probs.ndim != 2 or len(probs) != len(targets) or not len(targets):
        raise DataError(f"need probabilities (N, C) and N labels with N > 0; got {probs.shape} and {targets.shape}")
    m = confusion_matrix(targets, probs.argmax(axis=1), probs.shape[1])
    precision, recall, f1 = per_class(m)
    return Report(confusion=m, accuracy=float(np.trace(m) / m.sum()), precision=precision, recall=recall, f1=f1,
                  information=information_measures(m), cross_entropy=cross_entropy(probs, targets),
                  kl_divergence=kl_divergence(probs, targets),
                  rejection=[rejection_rates(probs, targets, t) for t in thresholds], **names)


def _cell(v: float, digits: int = 4) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def format_report(r: Report) -> str:
    """A text report: totals, confusion matrix, per-class table, information measures, rejection."""
    m = r.confusion
    C = m.shape[0]
    lines = [f"Report over {r.num_samples} samples (scores: '{r.scores_blob or '?'}', labels: "
             f"'{r.labels_blob or '?'}'" + (f", {r.ignored} ignored" if r.ignored else "") + ")",
             f"accuracy = {r.accuracy:.4f}", "",
             "Confusion matrix (rows: target class, columns: predicted class):"]
    width = max(len(str(int(m.max()))), len(str(C - 1)), 3)
    lines.append("  t\\y " + " ".join(str(c).rjust(width) for c in range(C)))
    for t in range(C):
        lines.append(f"  {str(t).rjust(3)} " + " ".join(str(int(v)).rjust(width) for v in m[t]))
    lines += ["", "class  precision  recall      F1  support"]
    support = m.sum(axis=1)
    for c in range(C):
        lines.append(f"{str(c).rjust(5)}  {_cell(r.precision[c]).rjust(9)}  {_cell(r.recall[c]).rjust(6)}  "
                     f"{_cell(r.f1[c]).rjust(6)}  {str(int(support[c])).rjust(7)}")
    macro = [float(np.nanmean(a)) if np.isfinite(a).any() else float("nan") for a in (r.precision, r.recall, r.f1)]
    lines.append(f"macro  {_cell(macro[0]).rjust(9)}  {_cell(macro[1]).rjust(6)}  {_cell(macro[2]).rjust(6)}  "
                 f"{str(r.num_samples).rjust(7)}")
    info = r.information
    lines += ["", "Information measures (bits):",
              f"  H(T)   = {info['H(T)']:.4f}   H(Y) = {info['H(Y)']:.4f}",
              f"  H(T,Y) = {info['H(T,Y)']:.4f}   (joint entropy)",
              f"  I(T;Y) = {info['I(T;Y)']:.4f}   (mutual information)",
              f"  NMI    = {info['NMI']:.4f}   (I / sqrt(H(T) H(Y)));  I/H(T) = {info['U']:.4f}",
              f"  H(Y|T) = {info['H(Y|T)']:.4f}   H(T|Y) = {info['H(T|Y)']:.4f}   (conditional entropies)",
              f"  cross-entropy = {r.cross_entropy:.4f} bits/sample   (mean -log2 p(target))",
              f"  KL(P_T || mean prediction) = {r.kl_divergence:.4f}"]
    if r.rejection:
        lines += ["", "Rejection (reject when the top probability < threshold; rates over all samples):",
                  "  threshold  rejection   error  correct  accepted accuracy"]
        for row in r.rejection:
            lines.append(f"  {row['threshold']:9.4g}  {row['rejection']:9.4f}  {row['error']:6.4f}  "
                         f"{row['correct']:7.4f}  {_cell(row['accepted_accuracy']).rjust(17)}")
    return "\n".join(lines)


# ------------------------------------------------------------------ reading a net
def _producer(net, blob: str):
    """The last layer that writes ``blob`` (in-place layers included), or None."""
    found = None
    for layer, tops in zip(net.layers, net.top_name_vecs):
        if blob in tops:
            found = layer
    return found


def _source_blob(net, blob: str) -> str:
    """The blob a Split layer copied (the net renames the bottoms it feeds through splits)."""
    layer = _producer(net, blob)
    while layer is not None and layer.type == "Split":
        blob = net.bottom_name_vecs[net.layers.index(layer)][0]
        layer = _producer(net, blob)
    return blob


def find_blobs(net) -> tuple[str, str, int | None]:
    """``(scores, labels, ignore_label or None)`` from the net's Accuracy / SoftmaxWithLoss layers."""
    for kind in SCORE_LAYERS:
        layers = [layer for layer in net.layers if layer.type == kind and len(layer.layer_param.bottom) >= 2]
        if not layers:
            continue
        bottoms = {layer.name: tuple(_source_blob(net, b) for b in net.bottom_name_vecs[net.layers.index(layer)][:2])
                   for layer in layers}
        pairs = set(bottoms.values())
        if len(pairs) == 1:
            lp = layers[0].layer_param
            param = lp.accuracy_param if kind == "Accuracy" else lp.loss_param
            ignore = int(param.ignore_label) if param.HasField("ignore_label") else None
            scores, labels = next(iter(pairs))
            return scores, labels, ignore
        if len(pairs) > 1:
            which = "; ".join(f"'{name}' reads {pair}" for name, pair in bottoms.items())
            raise NetConfigError(f"net '{net.name}': the {kind} layers disagree on the scores and labels ({which}); "
                                 "choose with --scores BLOB --labels BLOB")
    raise NetConfigError(f"net '{net.name}' has no Accuracy or SoftmaxWithLoss layer to tell which blobs hold the "
                         f"scores and the labels; give --scores BLOB --labels BLOB (blobs: {', '.join(net.blobs)})")


class ReportCollector:
    """Gathers the probabilities and labels of every test batch; :meth:`report` evaluates them.

    Parameters
    ----------
    net : Net
    scores, labels : str, optional
        Blob names; found from the Accuracy / SoftmaxWithLoss layer when not given.
    """

    def __init__(self, net, scores: str | None = None, labels: str | None = None) -> None:
        self.net = net
        self.ignore_label = None
        if scores is None or labels is None:
            auto_scores, auto_labels, ignore = find_blobs(net)
            if (scores or auto_scores, labels or auto_labels) == (auto_scores, auto_labels):
                self.ignore_label = ignore
            scores, labels = scores or auto_scores, labels or auto_labels
        for what, name in (("--scores", scores), ("--labels", labels)):
            if name not in net.blobs:
                raise NetConfigError(f"net '{net.name}' has no blob '{name}' ({what}); its blobs: "
                                     f"{', '.join(net.blobs)}")
        self.scores, self.labels = scores, labels
        producer = _producer(net, scores)
        self.softmax_producer = producer is not None and producer.type == "Softmax"
        self.is_probability: bool | None = True if self.softmax_producer else None
        self._probs: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        self.ignored = 0

    def add(self) -> None:
        """Take the current batch from the net's blobs (call after each forward pass)."""
        s = self.net.blobs[self.scores].data
        y = self.net.blobs[self.labels].data
        n = s.shape[0] if s.ndim else 1
        if s.ndim < 2 or s.size != n * s.shape[1]:
            raise NetConfigError(f"scores blob '{self.scores}' has shape {s.shape}; the report needs one score "
                                 "vector per sample, (N, C)")
        if y.size != n:
            raise NetConfigError(f"labels blob '{self.labels}' has {y.size} values for {n} samples of "
                                 f"'{self.scores}' {s.shape}")
        s = s.reshape(n, -1).astype(np.float64)
        y = y.reshape(-1)
        if not np.all(y == np.round(y)):
            raise DataError(f"labels blob '{self.labels}' holds non-integer values (e.g. {y[y != np.round(y)][0]})")
        y = y.astype(np.int64)
        if self.ignore_label is not None:
            keep = y != self.ignore_label
            self.ignored += int((~keep).sum())
            s, y = s[keep], y[keep]
        C = s.shape[1]
        bad = (y < 0) | (y >= C)
        if bad.any():
            raise DataError(f"labels blob '{self.labels}' holds label {int(y[bad][0])}, outside 0..{C - 1} (the "
                            f"{C} classes of '{self.scores}')")
        if self.is_probability is None:
            self.is_probability = bool(np.all(s >= 0) and np.allclose(s.sum(axis=1), 1.0, atol=1e-4))
        if not self.is_probability:
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
        self._probs.append(s)
        self._targets.append(y)

    def report(self, thresholds=()) -> Report:
        if not self._targets or not sum(len(t) for t in self._targets):
            raise DataError(f"no samples to report on (all {self.ignored} labels were ignore_label)")
        return evaluate(np.concatenate(self._probs), np.concatenate(self._targets), thresholds,
                        scores_blob=self.scores, labels_blob=self.labels, ignored=self.ignored)
