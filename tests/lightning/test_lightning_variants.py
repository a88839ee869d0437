"""The callback on every weight-tensor variant (plain, channels_last, inference, frozen).

A real ``Trainer.test`` per mode and variant: the quantized copy must equal the one built from
the plain model bit for bit, and the user's float submodule must come back untouched.
"""

from __future__ import annotations

import litmods
import pytest
import torch
from refs.variants import assert_untouched, make_variant, snapshot

from requant_plugin.lightning import REQuantCalibration

pl, Lit, _ = litmods.make("lightning")
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
