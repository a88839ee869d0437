"""``REQuantCalibration()`` with no ``attr`` finds the network on any LightningModule (real
Trainer, both Lightning flavours): under ``net``, under ``model``, layers directly on the
LightningModule; two candidate networks raise, listing them; a missing ``attr`` raises in setup."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from refs import litmods
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping

from requant_plugin.data import evaluate_accuracy
from requant_plugin.zoo import SmallCNN

FLAVOURS = ["lightning", "pytorch_lightning"]


def _classes(flavour: str) -> dict[str, type]:
    pl = importlib.import_module(litmods.FLAVOURS[flavour])

    class Base(pl.LightningModule):
        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_acc", (self(x).argmax(1) == y).float().mean(), batch_size=len(y))

    class UnderNet(Base):
        def __init__(self, state: dict[str, torch.Tensor]) -> None:
            super().__init__()
            self.net = SmallCNN(1, 10, 8)
            self.net.load_state_dict(state)
            self.criterion = nn.CrossEntropyLoss()  # no layers: never a candidate

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    class UnderModel(UnderNet):
        def __init__(self, state: dict[str, torch.Tensor]) -> None:
            super().__init__(state)
            self.model = self.net
            del self.net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    class Direct(Base):
        def __init__(self, state: dict[str, torch.Tensor]) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 4).flatten(1))

    class TeacherStudent(Base):
        def __init__(self, state: dict[str, torch.Tensor]) -> None:
            super().__init__()
            self.teacher, self.student = SmallCNN(1, 10, 8), SmallCNN(1, 10, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.student(x)

    return {"net": UnderNet, "model": UnderModel, "direct": Direct, "ambiguous": TeacherStudent}


def _test(flavour: str, module: Any, cb: Any) -> dict[str, float]:
    pl = importlib.import_module(litmods.FLAVOURS[flavour])
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    return trainer.test(module, litmods.digits().loader("test", 128), verbose=False)[0]


def _callback(flavour: str, attr: str | None = None) -> Any:
    plugin = importlib.import_module(litmods.PLUGIN[flavour])
    kwargs = {} if attr is None else {"attr": attr}
    return plugin.REQuantCalibration(**kwargs, mode="fx", num_batches=1, progress=False,
                                     qconfig_mapping=get_default_qconfig_mapping("x86"),
                                     dataloader=[(litmods.digits().x_train[:64],)])


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("where", ["net", "model"])
def test_no_argument_finds_the_one_child_network(flavour, where, trained_state, capsys):
    module = _classes(flavour)[where](trained_state)
    cb = _callback(flavour)
    res = _test(flavour, module, cb)
    name = type(module).__name__
    assert f"module={name}.{where}" in capsys.readouterr().out  # the summary says what it quantized
    ref = _callback(flavour, where)  # the same quantization with attr given explicitly
    ref.verbose = False
    x = litmods.digits().x_test[:64]
    expected = ref.calibrate(None, module)
    assert torch.equal(cb.quantized_model(x), expected(x))
    assert cb.state_dict()["config"]["attr"] == where
    assert res["test_acc"] == pytest.approx(evaluate_accuracy(expected, litmods.digits().loader("test", 128)) / 100,
                                            abs=1e-6)
    assert type(getattr(module, where)) is SmallCNN


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_layers_directly_on_the_lightning_module(flavour, trained_state, capsys):
    module = _classes(flavour)["direct"](trained_state)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    cb = _callback(flavour)
    res = _test(flavour, module, cb)
    assert "module=Direct.forward" in capsys.readouterr().out
    q = cb.quantized_model
    kinds = {type(m).__module__ for m in q.module.modules()}
    assert any(k.startswith("torch.ao.nn.quantized") for k in kinds), kinds
    loader = litmods.digits().loader("test", 128)
    assert res["test_acc"] == pytest.approx(evaluate_accuracy(q, loader) / 100, abs=1e-6)
    # the FP32 side of the comparison ran the float forward, not the quantized stand-in
    assert res["requant/fp32_acc"] == pytest.approx(evaluate_accuracy(module, loader) / 100, abs=1e-6)
    assert res["requant/sqnr_db"] < 80
    assert "forward" not in vars(module)
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_two_candidate_networks_raise_listing_them(flavour, trained_state):
    module = _classes(flavour)["ambiguous"](trained_state)
    with pytest.raises(ValueError,
                       match=r"cannot tell which network of TeacherStudent.*\['teacher', 'student'\].*attr="):
        _test(flavour, module, _callback(flavour))
    assert _callback(flavour, "student").calibrate(None, module) is not None


def test_missing_submodule_raises_in_setup():
    pl, Lit, DM = litmods.make("lightning")
    cb = importlib.import_module(litmods.PLUGIN["lightning"]).REQuantCalibration("net", mode="weights")
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    with pytest.raises(ValueError, match=r"no submodule 'net'.*\['model'\].*attr="):
        trainer.test(Lit(), DM(), verbose=False)
