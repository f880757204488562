"""train_online checks its arguments before training: each bad one is a ValueError naming it
(they were accepted and reported later as a model's failure, or as a raw error)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nsm.studies.online import train_online

pytestmark = pytest.mark.usefixtures("one_thread")


def _data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 4, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    tx, ty = torch.rand(10, 1, 4, 4, generator=g), torch.randint(0, 3, (10,), generator=g)
    return x, y, tx, ty


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(lr=True), "lr must be a finite number > 0"),
        (dict(lr=math.inf), "lr must be a finite number > 0"),
        (dict(lr=math.nan), "lr must be a finite number > 0"),
        (dict(lr=-1e-3), "lr must be a finite number > 0"),
        (dict(lr="0.1"), "lr must be a finite number > 0"),
        (dict(weight_decay=math.inf), "weight_decay must be a finite number >= 0"),
        (dict(weight_decay=math.nan), "weight_decay must be a finite number >= 0"),
        (dict(weight_decay=True), "weight_decay must be a finite number >= 0"),
    ],
)
def test_bad_optimizer_settings_are_refused(options, match):
    x, y, tx, ty = _data()
    with pytest.raises(ValueError, match=match):
        train_online(_model(), x, y, tx, ty, eval_at=[10], **options)


@pytest.mark.parametrize(
    "which, bad, match",
    [
        ("y", lambda t: t.float(), "y must hold integer class labels"),
        ("y", lambda t: t > 0, "y must hold integer class labels"),
        ("y", lambda t: t[:, None], "y must be a 1-D torch.Tensor"),
        ("x", lambda t: t.numpy(), "x must be a torch.Tensor"),
        ("x", lambda t: t.flatten(), "x must be a torch.Tensor of examples"),
        ("test_x", lambda t: t.numpy(), "test_x must be a torch.Tensor"),
        ("test_x", lambda t: t[:, :, :2], "test_x must hold examples of the shape of x's"),
        ("test_y", lambda t: t.float(), "test_y must hold integer class labels"),
        ("test_y", lambda t: t[:, None].expand(10, 2), "test_y must be a 1-D torch.Tensor"),
        ("test_y", lambda t: t.tolist(), "test_y must be a 1-D torch.Tensor"),
        ("test_y", lambda t: t[:4], "test_x and test_y must hold the same"),
    ],
)
def test_bad_examples_or_labels_are_refused(which, bad, match):
    x, y, tx, ty = _data()
    args = dict(x=x, y=y, test_x=tx, test_y=ty)
    args[which] = bad(args[which])
    with pytest.raises(ValueError, match=match):
        train_online(_model(), eval_at=[10], **args)


def test_integer_labels_of_any_width_train():
    """int32 / uint8 labels are class labels too: taken as int64 (the cross-entropy refused int32)."""
    x, y, tx, ty = _data()
    res = train_online(_model(), x, y.int(), tx, ty.to(torch.uint8), eval_at=[0, 10])
    assert res["failed"] is None and res["examples"] == [0, 10]
