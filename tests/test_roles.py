"""What a metric is, from its tag: the naming conventions of the writers lrdiag reads."""

from __future__ import annotations

import pytest

from lrdiag.errors import LrdiagError
from lrdiag.series.model import Series
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
    # not what their words suggest
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
