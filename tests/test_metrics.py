"""eo_contrast.metrics: segmentation scores and (mean) average precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import eo_contrast as ec
from eo_contrast.metrics import (
    average_precision,
    iou_per_class,
    mean_average_precision,
    miou,
    overall_accuracy,
    water_iou,
)


def _ap_by_ranks(scores: np.ndarray, targets: np.ndarray) -> float:
    """Textbook AP without ties: mean, over the positives, of the precision at their rank."""
    order = np.argsort(-scores)
    hits = targets[order].astype(bool)
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


# ---------------------------------------------------------------------------------- segmentation


def test_water_iou_moved_here_and_still_served_by_flood_demo() -> None:
    from eo_contrast.pipelines import flood_demo

    assert flood_demo.water_iou is water_iou
    label = np.array([[1, 1, 0, 0], [1, -1, 0, 0]])
    pred = np.array([[1, 0, 1, 0], [1, 1, -1, 0]])
    assert water_iou(pred, label) == pytest.approx(2 / 4)  # 2 shared; union 4 (the -1 label out)
    assert np.isnan(water_iou(np.zeros((2, 2), int), np.zeros((2, 2), int)))
    with pytest.raises(ValueError, match="must have the same shape"):
        water_iou(np.zeros(3, int), np.zeros(4, int))


def test_iou_per_class_by_hand() -> None:
    label = np.array([[0, 0, 1, 1], [2, 2, -1, -1]])
    pred = np.array([[0, 0, 1, 0], [2, 1, 1, -1]])
    # class 0: inter 2, union 3; class 1: inter 1, union 3; class 2: inter 1, union 2
    np.testing.assert_allclose(iou_per_class(pred, label, 3), [2 / 3, 1 / 3, 1 / 2])
    assert miou(pred, label) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    # a 4th class absent from labels and predictions is left out of the mean
    assert np.isnan(iou_per_class(pred, label, 4)[3])
    assert miou(pred, label, num_classes=4) == pytest.approx(0.5)


def test_nodata_prediction_is_a_miss_and_unlabelled_pixels_are_ignored() -> None:
    label = np.array([0, 1, 1, -1, -1])
    pred = np.array([-1, 1, 1, 0, 0])
    np.testing.assert_allclose(iou_per_class(pred, label, 2), [0.0, 1.0])
    assert overall_accuracy(pred, label) == pytest.approx(2 / 3)


def test_a_predicted_class_absent_from_labels_scores_zero() -> None:
    label = np.array([0, 0, 0, 0])
    pred = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(iou_per_class(pred, label, 2), [0.75, 0.0])
    assert miou(pred, label) == pytest.approx(0.375)


def test_perfect_and_empty() -> None:
    label = np.arange(12).reshape(3, 4) % 3
    assert miou(label, label) == 1.0 and overall_accuracy(label, label) == 1.0
    none = np.full((2, 2), -1)
    assert np.isnan(miou(none, none)) and np.isnan(overall_accuracy(none, none))


@given(st.integers(0, 2**31 - 1))
def test_segmentation_scores_in_range_and_match_confusion_matrix(seed: int) -> None:
    rng = np.random.default_rng(seed)
    label = rng.integers(-1, 4, size=(9, 7))
    pred = rng.integers(-1, 4, size=(9, 7))
    m = label >= 0
    conf = np.zeros((4, 5), int)  # rows: truth, cols: prediction (last col: nodata)
    for t, p in zip(label[m], pred[m], strict=True):
        conf[t, p if p >= 0 else 4] += 1
    inter = np.diag(conf[:, :4])
    union = conf.sum(1) + conf[:, :4].sum(0) - inter
    expected = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    np.testing.assert_allclose(iou_per_class(pred, label, 4), expected)
    oa = overall_accuracy(pred, label)
    assert oa == pytest.approx(inter.sum() / m.sum())
    assert 0 <= miou(pred, label, 4) <= 1


def test_segmentation_input_errors() -> None:
    with pytest.raises(ValueError, match=r"label holds class 3 but num_classes=2"):
        iou_per_class(np.array([0, 1]), np.array([0, 3]), 2)
    with pytest.raises(TypeError, match=r"label must hold integer class ids, got dtype float64"):
        miou(np.array([0, 1]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"pred \(2,\) and label \(3,\) must have the same shape"):
        overall_accuracy(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        iou_per_class(np.array([0]), np.array([0]), 0)


# ----------------------------------------------------------------------------- average precision


def test_average_precision_by_hand_and_ties() -> None:
    # scikit-learn's documented example
    assert average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == (
        pytest.approx(0.8333333)
    )
    # tied scores are one threshold: precision 1/2 at recall 1
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert average_precision(np.array([0.9, 0.1, 0.2]), np.array([1, 0, 0])) == 1.0
    assert average_precision(np.array([0.1, 0.2]), np.array([1, 1])) == 1.0
    assert np.isnan(average_precision(np.array([0.1, 0.2]), np.array([0, 0])))


@given(st.integers(0, 2**31 - 1), st.integers(2, 40))
def test_average_precision_matches_the_rank_definition(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.permutation(n).astype(float)  # no ties
    targets = rng.integers(0, 2, n)
    if targets.sum() == 0:
        targets[0] = 1
    assert average_precision(scores, targets) == pytest.approx(_ap_by_ranks(scores, targets))


def test_average_precision_errors() -> None:
    with pytest.raises(ValueError, match="targets must be binary"):
        average_precision(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="scores contain NaN"):
        average_precision(np.array([np.nan, 0.2]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"scores \(2,\) and targets \(3,\)"):
        average_precision(np.array([0.1, 0.2]), np.array([0, 1, 1]))


def test_mean_average_precision_macro_micro_and_classes() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    s = np.array([[0.9, 0.2, 0.5], [0.1, 0.3, 0.5], [0.4, 0.6, 0.5]])
    # class 2 has no positive: left out of the macro mean
    assert mean_average_precision(s, y) == pytest.approx((1.0 + 0.5) / 2)
    assert mean_average_precision(s, y, classes=[0]) == 1.0
    flat = mean_average_precision(s[:, :2], y[:, :2], average="micro")
    assert flat == pytest.approx(average_precision(s[:, :2].ravel(), y[:, :2].ravel()))
    assert np.isnan(mean_average_precision(s, np.zeros_like(y)))
    with pytest.raises(ValueError, match="average='weighted'; use 'macro' or 'micro'"):
        mean_average_precision(s, y, average="weighted")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"must both be \(n_samples, n_classes\)"):
        mean_average_precision(s[0], y[0])


def test_mean_average_precision_on_bigearthnet_labels(shared_data: Path) -> None:
    ds = ec.read_bigearthnet(shared_data / "bigearthnet_v2_subset", split="test")
    y = np.asarray(ds["labels"].values)
    present = np.flatnonzero(y.sum(0) > 0)
    assert len(present) == 9  # classes with a positive among the 8 test patches
    # the labels as scores rank perfectly; one score for every patch gives the prevalence
    assert mean_average_precision(y.astype(float), y) == 1.0
    constant = np.zeros(y.shape)
    assert mean_average_precision(constant, y) == pytest.approx(y[:, present].mean(0).mean())
    assert mean_average_precision(constant, y, average="micro") == pytest.approx(y.mean())
