"""Infer what a metric is (training loss, validation loss, learning rate, ...) from its tag.

Tags follow many conventions: `loss`, `train/loss`, `train_loss_step`, `Loss/train`,
`total_loss`, `eval_loss`, `val_loss`, `validation/epoch_loss`, `learning_rate`, `lr-Adam`,
`lr-Adam/pg1`, `x/lr0`, `grad_norm`, `val/box_loss`, `metrics/mAP_0.5`; the trackers' too:
MLflow's `train_loss` / `validation_loss`, W&B's `train/loss`, `epoch/val_loss`, `batch/loss`,
Ultralytics' `metrics/mAP50-95B`. A tag is split into lower-case words; the words decide its role.
Step counters logged as metrics (`epoch`, `trainer/global_step`, `Training/step`) play no role.
"""

from __future__ import annotations

import re

from lrdiag.errors import LrdiagError

ROLES = ("train_loss", "val_loss", "lr", "train_acc", "val_acc", "grad_norm")

_VAL_WORDS = {"val", "valid", "validation", "eval", "evaluation", "test", "dev", "holdout"}
_QUALITY_WORDS = {
    "acc", "accuracy", "top1", "top5", "map", "f1", "precision", "recall", "auc", "iou",
    "miou", "dice", "bleu", "rouge", "rouge1", "rouge2", "rougel", "rougelsum", "exact", "em",
    "fscore", "fmeasure", "f1score", "map50",
}
# Words that qualify a loss without making it a component of it.
_PLAIN_LOSS_WORDS = {"train", "training", "learn", "loss", "total", "epoch", "step", "avg",
                     "mean", "batch", "overall", "objective", "val", "valid", "validation",
                     "eval", "evaluation", "test", "epochs", "steps", "iter", "running", "main"}
# A tag made of these words alone counts steps (`trainer/global_step`, W&B's custom `Training/step`,
# Keras' `epoch/epoch`, `batch/batch_step`): it is a step, never a metric.
_STEP_WORDS = {"step", "steps", "global", "epoch", "epochs", "iter", "iteration", "iterations", "batch",
               "trainer", "train", "training", "val", "valid", "validation", "eval", "test", "custom"}
_LR_RE = re.compile(r"(?:^|[^a-z])(?:lr\d*|learning[_\- ]?rate)(?:[^a-z]|$)")
_GRAD_NORM_RE = re.compile(r"grad(?:ient)?s?[_\- ]?norm")
# `loss_scale` (mixed precision) and `loss_weight` are not losses.
_NOT_LOSS_RE = re.compile(r"loss[_\- ]?(?:scale|scaler|weight|coef)")
# What a lower-cased tag holds if infer_role gives it a role: what _LR_RE and _GRAD_NORM_RE start with, `loss`, or
# a quality word. A tag without any of them has no role, found at a tenth of infer_role's cost (a run of a million
# per-class metrics, `AP-class7`, has a million tags).
_MAY_HAVE_ROLE = re.compile("|".join(["lr", "learning", "grad", "loss", *sorted(_QUALITY_WORDS)]))


def words(tag: str) -> list[str]:
    tag_words = [w for w in re.split(r"[^a-z0-9]+", tag.lower()) if w]
    if tag_words[:1] == ["metrics"]:
        # Ultralytics YOLOv8 marks box and mask metrics with a suffix: `metrics/precision(B)` is written
        # `metrics/precisionB`, `metrics/mAP50-95(M)` `metrics/mAP50-95M`.
        tag_words = [w[:-1] if w[-1:] in ("b", "m") and w[:-1] in {"precision", "recall", "map50", "95"} else w for w in tag_words]
    return tag_words


def infer_role(tag: str) -> str | None:
    """The role a tag plays, or None when it is some other metric."""
    lowered = tag.lower()
    tag_words = words(tag)
    if set(tag_words) <= _STEP_WORDS:
        return None
    is_val = any(w in _VAL_WORDS for w in tag_words)
    if _LR_RE.search(lowered) and "loss" not in lowered:
        return "lr"
    if _GRAD_NORM_RE.search(lowered):
        return "grad_norm"
    if any("loss" in w for w in tag_words) and not _NOT_LOSS_RE.search(lowered):
        return "val_loss" if is_val else "train_loss"
    if any(w in _QUALITY_WORDS for w in tag_words):
        # YOLOv5/v8 log `metrics/precision`, `metrics/mAP_0.5`, ... from the validation set.
        return "val_acc" if is_val or tag_words[0] == "metrics" else "train_acc"
    return None


def component(tag: str) -> tuple[str, ...]:
    """The words that make a loss one component of the total (`box` of `train/box_loss`); () for the total."""
    return tuple(w for w in words(tag) if w not in _PLAIN_LOSS_WORDS and "loss" not in w)


def rank(tag: str, role: str) -> tuple[int, int]:
    """Sort key among several series of one role: the plain total loss before its components,
    a step-level series before its epoch mean, the first optimizer group's LR before others."""
    tag_words = words(tag)
    extra = list(component(tag))
    if role == "lr":
        extra = [w for w in tag_words if not (w.startswith("lr") or w in {"learning", "rate", "pg0", "0", "x"})]
    epoch_level = int("epoch" in tag_words)
    return (len(extra), epoch_level)


def parse_role_overrides(items: list[str] | tuple[str, ...], origin: str) -> dict[str, str]:
    """`val_loss=my/valid_metric` strings into {tag: role}; errors name where they came from."""
    overrides: dict[str, str] = {}
    for item in items:
        role, sep, tag = item.partition("=")
        role, tag = role.strip(), tag.strip()
        if not sep or not tag:
            raise LrdiagError(f"{origin}: role override {item!r} must look like ROLE=TAG, e.g. val_loss=my/valid_metric")
        if role not in ROLES and role != "none":
            raise LrdiagError(f"{origin}: unknown role {role!r} in {item!r}; expected one of {', '.join(ROLES)}, none")
        overrides[tag] = role
    return overrides


def assign_roles(series: dict, overrides: dict[str, str] | None = None) -> None:
    """Set `role` on every series in place: explicit overrides first, then inference."""
    overrides = overrides or {}
    may_have_role = _MAY_HAVE_ROLE.search
    for tag, one in series.items():
        if tag in overrides:
            one.role = None if overrides[tag] == "none" else overrides[tag]
        else:
            one.role = infer_role(tag) if may_have_role(tag.lower()) else None
