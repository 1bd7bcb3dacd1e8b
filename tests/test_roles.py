"""What a metric is, from its tag: the naming conventions of the writers lrdiag reads."""

from __future__ import annotations

import numpy as np
import pytest

from lrdiag.errors import LrdiagError
from lrdiag.series.model import Run, Series
from lrdiag.series.roles import ROLES, assign_roles, infer_role, parse_role_overrides

ROLE_TABLE = [
    # training loss: plain, prefixed, Lightning step/epoch suffixes, TF object detection, detectron2
    ("loss", "train_loss"),
    ("train/loss", "train_loss"),
    ("train_loss_step", "train_loss"),
    ("train_loss_epoch", "train_loss"),
    ("Loss/train", "train_loss"),
    ("Loss/total_loss", "train_loss"),
    ("total_loss", "train_loss"),
    ("train/box_loss", "train_loss"),
    ("learn/Logloss", "train_loss"),  # CatBoost
    # validation loss: Hugging Face, Keras/Lightning, split folders, YOLO, CatBoost
    ("eval_loss", "val_loss"),
    ("val_loss", "val_loss"),
    ("ptl/val_loss", "val_loss"),
    ("validation/epoch_loss", "val_loss"),
    ("val/box_loss", "val_loss"),
    ("Loss/val", "val_loss"),
    ("test/Logloss", "val_loss"),
    # learning rate: Hugging Face, Lightning LearningRateMonitor, YOLO
    ("learning_rate", "lr"),
    ("train/learning_rate", "lr"),
    ("lr", "lr"),
    ("lr-Adam", "lr"),
    ("lr-Adam/pg1", "lr"),
    ("lr-SGD-1", "lr"),
    ("x/lr0", "lr"),
    ("x/lr2", "lr"),
    # gradient norm
    ("grad_norm", "grad_norm"),
    ("train/grad_norm", "grad_norm"),
    ("gradient_norm", "grad_norm"),
    # quality metrics
    ("eval_accuracy", "val_acc"),
    ("val_acc", "val_acc"),
    ("validation/accuracy", "val_acc"),
    ("acc", "train_acc"),
    ("train/accuracy", "train_acc"),
    ("metrics/mAP_0.5", "val_acc"),  # YOLO computes metrics/* on the validation set
    ("metrics/precision", "val_acc"),
    # the trackers: MLflow (plain log_metric, Lightning, HF), W&B (HF, Keras WandbMetricsLogger), Ultralytics
    ("validation_loss", "val_loss"),
    ("Training/loss", "train_loss"),
    ("eval/loss", "val_loss"),
    ("epoch/loss", "train_loss"),
    ("epoch/val_loss", "val_loss"),
    ("batch/loss", "train_loss"),
    ("epoch/learning_rate", "lr"),
    ("lr/pg0", "lr"),
    ("Validation/accuracy", "val_acc"),
    ("metrics/mAP50B", "val_acc"),  # YOLOv8 writes metrics/mAP50(B) as mAP50B
    ("metrics/mAP50-95B", "val_acc"),
    ("metrics/precisionB", "val_acc"),
    ("metrics/recallM", "val_acc"),
    # step counters logged as metrics are steps, not metrics
    ("trainer/global_step", None),
    ("train/global_step", None),
    ("Training/step", None),
    ("Validation/step", None),
    ("epoch/epoch", None),
    ("batch/batch_step", None),
    # not what their words suggest
    ("metrics/emb", None),  # only Ultralytics' own metric words take its B/M suffix
    ("loss_scale", None),  # mixed-precision scaler, not a loss
    ("loss_weight", None),
    ("epoch", None),
    ("train/epoch", None),
    ("eval_runtime", None),
    ("eval_samples_per_second", None),
    ("lrs", None),  # 'lr' must be a word, not a prefix of one
    ("flr", None),
    ("clip", None),
]


@pytest.mark.parametrize(("tag", "role"), ROLE_TABLE)
def test_infer_role_follows_the_naming_conventions(tag, role):
    assert infer_role(tag) == role


def test_every_inferred_role_is_a_declared_role():
    assert {role for _, role in ROLE_TABLE} - {None} == set(ROLES)


def test_role_overrides_parse_into_tag_to_role_and_take_precedence():
    overrides = parse_role_overrides(["val_loss = my/valid_metric", "none=loss", "lr=sched/value"], "--role")
    assert overrides == {"my/valid_metric": "val_loss", "loss": "none", "sched/value": "lr"}
    series = {tag: Series(tag, [0], [1.0]) for tag in ("my/valid_metric", "loss", "sched/value", "val_acc")}
    assign_roles(series, overrides)
    assert {tag: one.role for tag, one in series.items()} == {
        "my/valid_metric": "val_loss", "loss": None, "sched/value": "lr", "val_acc": "val_acc"}


@pytest.mark.parametrize("item", ["val_loss", "val_loss=", "val_loss=  ", "  "])
def test_malformed_role_override_error_names_its_origin_and_the_expected_form(item):
    with pytest.raises(LrdiagError) as raised:
        parse_role_overrides([item], "pyproject.toml [tool.lrdiag] roles")
    message = str(raised.value)
    assert message.startswith("pyproject.toml [tool.lrdiag] roles:")
    assert "ROLE=TAG" in message


@pytest.mark.parametrize("role", ["validation_loss", ""])
def test_unknown_role_override_error_names_its_origin_the_role_and_the_choices(role):
    with pytest.raises(LrdiagError) as raised:
        parse_role_overrides(["val_loss=a", f"{role}=b"], "--role")
    message = str(raised.value)
    assert message.startswith("--role:")
    assert f"unknown role {role!r}" in message
    assert all(role in message for role in ROLES)


def yolo_run(order: list[str]) -> Run:
    """A YOLO run's losses, met in the given order (results.csv and event files order them differently)."""
    run = Run("yolo", "", [])
    run.series = {tag: Series(tag, np.arange(10), np.linspace(1, 0.5, 10)) for tag in order}
    assign_roles(run.series)
    return run


YOLO_LOSSES = ["train/box_loss", "train/obj_loss", "train/cls_loss", "val/box_loss", "val/obj_loss", "val/cls_loss"]


@pytest.mark.parametrize("order", [YOLO_LOSSES, YOLO_LOSSES[::-1], sorted(YOLO_LOSSES), YOLO_LOSSES[3:] + YOLO_LOSSES[:3]])
def test_primary_train_and_val_losses_are_the_same_component_whatever_the_order(order):
    run = yolo_run(order)
    assert (run.primary("train_loss").tag, run.primary("val_loss").tag) == ("train/box_loss", "val/box_loss")


def test_a_val_component_is_paired_with_the_matching_train_component():
    run = yolo_run(["train/box_loss", "train/obj_loss", "val/obj_loss", "val/cls_loss"])
    assert (run.primary("train_loss").tag, run.primary("val_loss").tag) == ("train/obj_loss", "val/obj_loss")


def test_the_total_loss_still_comes_before_components():
    run = yolo_run(["train/box_loss", "train/loss", "val/box_loss", "val/loss"])
    assert (run.primary("train_loss").tag, run.primary("val_loss").tag) == ("train/loss", "val/loss")


def test_a_one_point_summary_never_stands_for_the_logged_loss():
    """Hugging Face's trainer logs `train_loss` once at the end (its mean) beside the curve `loss`."""
    run = Run("hf", "", [])
    run.series = {"train_loss": Series("train_loss", [1875], [0.9]),
                  "loss": Series("loss", np.arange(10, 1880, 10), np.linspace(2, 0.5, 187))}
    assign_roles(run.series)
    assert run.primary("train_loss").tag == "loss"
