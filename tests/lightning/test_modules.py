"""The float copy the callback quantizes (:mod:`requant_plugin.lightning.modules`): every weight-tensor
variant (plain, channels_last, inference, frozen), pruning baked into the copy only, and the quantized
module under ``Trainer(deterministic=True)``.

A real ``Trainer.test`` per mode and variant: the quantized copy must equal the one built from
the plain model bit for bit, and the user's float submodule must come back untouched.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from refs import litmods
from refs.variants import assert_untouched, make_variant, snapshot
from torch.ao.quantization import get_default_qconfig_mapping

from requant_plugin.lightning import REQuantCalibration

pl, Lit, DM = litmods.make("lightning")
_PLAIN: dict[str, dict[str, object]] = {}


def _run(state: dict[str, torch.Tensor], kind: str, mode: str) -> dict[str, object]:
    module = Lit()
    module.model.load_state_dict(state)
    module.model = make_variant(module.model, kind)
    float_module, before = module.model, snapshot(module.model)
    data = litmods.digits()
    cb = REQuantCalibration("model", mode=mode, num_batches=1, verbose=False, progress=False,
                            dataloader=[(data.x_train[:64],)])
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb], limit_test_batches=2))
    results = trainer.test(module, data.loader("test", 64), verbose=False)[0]
    assert module.model is float_module
    assert_untouched(float_module, before)
    with torch.no_grad():
        out = cb.quantized_model(data.x_test[:64])
    return {"out": out, "test_acc": results["test_acc"], "quant_acc": results["requant/quant_acc"],
            "summary": cb.summary}


@pytest.mark.filterwarnings("ignore:.*limit_test_batches=2.*")
@pytest.mark.parametrize("mode", ["weights", "fx", "pt2e"])
def test_every_weight_variant_quantizes_like_the_plain_model(trained_state, weight_variant, mode):
    if mode not in _PLAIN:
        _PLAIN[mode] = _run(trained_state, "plain", mode)
    got, ref = _run(trained_state, weight_variant, mode), _PLAIN[mode]
    assert torch.equal(got["out"], ref["out"])  # type: ignore[arg-type]
    assert got["test_acc"] == ref["test_acc"] and got["quant_acc"] == ref["quant_acc"]
    assert got["summary"] == ref["summary"]


def trained_module(state):
    m = Lit()
    m.model.load_state_dict(state)
    return m


def test_model_pruning_in_the_same_trainer(tmp_path, trained_state):
    callbacks = importlib.import_module("lightning.pytorch.callbacks")
    prune = callbacks.ModelPruning("l1_unstructured", amount=0.5, verbose=0)
    cb = REQuantCalibration("model", mode="fx", num_batches=2, verbose=False,
                            qconfig_mapping=get_default_qconfig_mapping("x86"))
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[prune, cb], default_root_dir=str(tmp_path),
                                                  limit_train_batches=6))
    model, dm = trained_module(trained_state), DM()
    trainer.fit(model, dm)
    res = trainer.test(model, dm, verbose=False)[0]
    # pruning is permanent in the float module, and carried into the quantized weights
    w = model.model.conv2.weight.detach()
    assert (w == 0).float().mean() >= 0.5
    qw = cb.quantized_model.module.conv2.weight()
    assert (qw.int_repr() == 0).float().mean() >= 0.5
    assert torch.equal(qw.dequantize() == 0, qw.int_repr() == 0)
    assert res["requant/top1_agreement"] > 0.9
    path = tmp_path / "pruned.ckpt"
    trainer.save_checkpoint(str(path))
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert not any(k.endswith(("_orig", "_mask")) for k in sd)
    Lit().load_state_dict(sd, strict=True)


def test_pruning_hooks_are_baked_into_the_copy_only(trained_state):
    from torch.nn.utils import prune

    model = trained_module(trained_state)
    prune.l1_unstructured(model.model.conv2, "weight", amount=0.6)
    cb = REQuantCalibration("model", mode="fx", num_batches=1, verbose=False,
                            qconfig_mapping=get_default_qconfig_mapping("x86"))
    q = cb.calibrate(None, model, dataloader=[(litmods.digits().x_train[:64],)])
    assert hasattr(model.model.conv2, "weight_orig")  # the user's pruning reparametrization stays
    assert (q.module.conv2.weight().int_repr() == 0).float().mean() >= 0.6


def test_deterministic_trainer(trained_state):
    cb = REQuantCalibration("model", mode="fx", num_batches=1, verbose=False,
                            qconfig_mapping=get_default_qconfig_mapping("x86"))
    try:
        trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb], deterministic=True))
        res = trainer.test(trained_module(trained_state), DM(), verbose=False)[0]
    finally:
        torch.use_deterministic_algorithms(False)
    assert res["test_acc"] > 0.8
