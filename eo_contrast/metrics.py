"""Scores of segmentation and multi-label classification, in plain NumPy.

* :func:`water_iou`, :func:`water_counts`, :func:`iou_per_class`, :func:`miou`,
  :func:`overall_accuracy`: per-pixel class maps against a label map where values below 0 (-1)
  mark unlabelled pixels, which are left out. A prediction of -1 (nodata) on a labelled pixel is a miss.
* :func:`average_precision`, :func:`mean_average_precision`: ranking quality of scores against
  binary multi-label targets (the BigEarthNet metric), with the same step-wise definition as
  scikit-learn's ``average_precision_score``.

Examples
--------
>>> import numpy as np
>>> label = np.array([[0, 0, 1, -1]])
>>> pred = np.array([[0, 1, 1, 0]])
>>> round(miou(pred, label, num_classes=2), 3), round(overall_accuracy(pred, label), 3)
(0.5, 0.667)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "average_precision",
    "iou_per_class",
    "mean_average_precision",
    "miou",
    "overall_accuracy",
    "water_counts",
    "water_iou",
]


def _pair(pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred)
    t = np.asarray(label)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and label {t.shape} must have the same shape")
    for name, a in (("pred", p), ("label", t)):
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
            raise TypeError(f"{name} must hold integer class ids, got dtype {a.dtype}")
    m = t >= 0
    return p[m].astype(np.int64), t[m].astype(np.int64)


def water_iou(pred: np.ndarray, label: np.ndarray, water: int = 1) -> float:
    """Intersection over union of the ``water`` class, over the pixels with a label >= 0.

    Predicted nodata (-1) counts as "not water". Returns NaN when neither has water.

    Examples
    --------
    >>> import numpy as np
    >>> label = np.array([[1, 1, 0, -1]])
    >>> pred = np.array([[1, 0, 1, 1]])
    >>> round(water_iou(pred, label), 3)  # 1 shared of 3 in the union (the -1 pixel is ignored)
    0.333
    """
    inter, union = water_counts(pred, label, water)
    return inter / union if union else float("nan")


def water_counts(pred: np.ndarray, label: np.ndarray, water: int = 1) -> tuple[int, int]:
    """Intersection and union pixel counts of the ``water`` class, over the labelled pixels.

    Summed over many chips, they give the aggregated water IoU (``sum(I) / sum(U)``), which
    weights each chip by its water and false alarms instead of averaging per-chip ratios (a chip
    without water has an IoU of 0 or none, but its false alarms still count).

    Examples
    --------
    >>> import numpy as np
    >>> water_counts(np.array([[1, 0, 1, 1]]), np.array([[1, 1, 0, -1]]))
    (1, 3)
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"pred {pred.shape} and label {label.shape} must have the same shape")
    m = label >= 0
    p, t = pred[m] == water, label[m] == water
    return int(np.logical_and(p, t).sum()), int(np.logical_or(p, t).sum())


def iou_per_class(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Intersection over union of each class ``0..num_classes-1`` over the labelled pixels.

    Parameters
    ----------
    pred, label
        Integer class maps of one shape; labels below 0 are left out; predictions outside
        ``0..num_classes-1`` (e.g. -1 nodata) match no class.
    num_classes
        Number of classes.

    Returns
    -------
    numpy.ndarray
        float64 ``(num_classes,)``; NaN for a class absent from both the labels and the
        predictions (on labelled pixels).

    Raises
    ------
    ValueError
        For shapes that differ, or labels >= ``num_classes``.
    TypeError
        For non-integer maps.

    Examples
    --------
    >>> import numpy as np
    >>> iou_per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 0, -1]), 3).tolist()
    [0.5, 0.5, nan]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise TypeError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    p, t = _pair(pred, label)
    if t.size and int(t.max()) >= num_classes:
        raise ValueError(
            f"label holds class {int(t.max())} but num_classes={num_classes}; pass the number "
            "of classes (largest id + 1)"
        )
    valid_p = (p >= 0) & (p < num_classes)
    inter = np.bincount(t[valid_p & (p == t)], minlength=num_classes)[:num_classes]
    area_t = np.bincount(t, minlength=num_classes)[:num_classes]
    area_p = np.bincount(p[valid_p], minlength=num_classes)[:num_classes]
    union = (area_t + area_p - inter).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)


def miou(pred: np.ndarray, label: np.ndarray, num_classes: int | None = None) -> float:
    """Mean intersection over union over the classes present in the labels or predictions.

    Classes absent from both (on labelled pixels) are left out of the mean; a class that is
    predicted but absent from the labels scores 0.

    Parameters
    ----------
    pred, label
        Integer class maps of one shape; labels below 0 are left out.
    num_classes
        Number of classes; ``None``: the largest label or prediction + 1.

    Returns
    -------
    float
        In [0, 1]; NaN when there is no labelled pixel.

    Examples
    --------
    >>> import numpy as np
    >>> label = np.array([[0, 0, 1, 1], [2, 2, -1, -1]])
    >>> pred = np.array([[0, 0, 1, 0], [2, 1, 1, 1]])
    >>> round(miou(pred, label), 4)  # (2/3 + 1/3 + 1/2) / 3
    0.5
    """
    p, t = _pair(pred, label)
    if num_classes is None:
        num_classes = max(int(t.max(initial=-1)), int(p.max(initial=-1))) + 1
        if num_classes < 1:
            return float("nan")
    if t.size == 0:
        return float("nan")
    ious = iou_per_class(pred, label, int(num_classes))
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def overall_accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    """Fraction of the labelled pixels (label >= 0) whose predicted class is the label.

    Examples
    --------
    >>> import numpy as np
    >>> overall_accuracy(np.array([1, 2, 2, 0]), np.array([1, 2, 0, -1]))
    0.6666666666666666
    """
    p, t = _pair(pred, label)
    return float((p == t).mean()) if t.size else float("nan")


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class: the area under its step-wise precision-recall curve.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, from the highest
    (tied scores form one threshold), as scikit-learn's ``average_precision_score``.

    Parameters
    ----------
    scores
        Scores, higher meaning more likely positive (any real values; not NaN).
    targets
        Binary targets (0/1 or bool) of the same shape.

    Returns
    -------
    float
        In [0, 1]; NaN when there is no positive target.

    Raises
    ------
    ValueError
        For shapes that differ, non-binary targets or NaN scores.

    Examples
    --------
    >>> import numpy as np
    >>> round(average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])), 4)
    0.8333
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(targets).ravel()
    if np.asarray(scores).shape != np.asarray(targets).shape:
        raise ValueError(
            f"scores {np.asarray(scores).shape} and targets {np.asarray(targets).shape} must "
            "have the same shape"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("targets must be binary (0/1 or bool)")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; score every sample")
    y = y.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # last index of each run of tied scores = one threshold
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(
    scores: np.ndarray,
    targets: np.ndarray,
    *,
    average: Literal["macro", "micro"] = "macro",
    classes: Sequence[int] | None = None,
) -> float:
    """Mean average precision of multi-label scores ``(n_samples, n_classes)``.

    Parameters
    ----------
    scores
        ``(n_samples, n_classes)`` scores.
    targets
        ``(n_samples, n_classes)`` binary targets.
    average
        ``"macro"``: mean of the per-class :func:`average_precision` over the classes with at
        least one positive (the others have no defined AP and are left out); ``"micro"``: one
        AP over all (sample, class) entries.
    classes
        Restrict to these class columns.

    Returns
    -------
    float
        In [0, 1]; NaN when no class has a positive.

    Raises
    ------
    ValueError
        For arrays that are not 2-D of one shape, or an unknown ``average``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[1, 0], [0, 1], [1, 0]])
    >>> s = np.array([[0.9, 0.2], [0.1, 0.3], [0.4, 0.6]])
    >>> mean_average_precision(s, y)  # class 0: AP 1; class 1: its positive ranks 2nd, AP 0.5
    0.75
    >>> round(mean_average_precision(s, y, average="micro"), 4)
    0.8056
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(targets)
    if s.ndim != 2 or s.shape != y.shape:
        raise ValueError(
            f"scores {s.shape} and targets {y.shape} must both be (n_samples, n_classes)"
        )
    if classes is not None:
        cols = np.asarray(list(classes), dtype=np.int64)
        s, y = s[:, cols], y[:, cols]
    if average == "micro":
        return average_precision(s, y)
    if average != "macro":
        raise ValueError(f"average={average!r}; use 'macro' or 'micro'")
    aps = [average_precision(s[:, j], y[:, j]) for j in range(s.shape[1])]
    finite = [a for a in aps if not np.isnan(a)]
    return float(np.mean(finite)) if finite else float("nan")
