"""ONNX Q/DQ export of models with ``nn.MultiheadAttention`` (TransformerEncoder, ViT).

The export writes every attention out as explicit q/k/v/out Linear layers
(:mod:`requant_plugin.export.attention`): first that twin is checked against
``nn.MultiheadAttention`` itself, then whole models are exported and checked like every other
export: int8 weights with per-channel scales on every projection, quantized projection inputs,
no TensorRT rule error, ONNX Runtime against the fake-quant reference code for code, the
user's model untouched (and PyTorch's fast-path switch left as it was).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402
from refs.variants import assert_untouched, snapshot  # noqa: E402

from requant_plugin.export import check_tensorrt_compat, export_onnx_qdq, verify_export  # noqa: E402
from requant_plugin.export.attention import ExplicitAttention, explicit_attention_  # noqa: E402


def _mha_pairs() -> list[tuple[nn.MultiheadAttention, ExplicitAttention]]:
    torch.manual_seed(0)
    pairs = []
    for batch_first in (True, False):
        for kdim in (None, 6):
            for bias in (True, False):
                mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim, bias=bias).eval()
                pairs.append((mha, ExplicitAttention.from_mha(mha, "attn").eval()))
    return pairs


@pytest.mark.parametrize("need_weights", [True, False])
def test_explicit_attention_equals_multihead_attention(need_weights: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    for mha, twin in _mha_pairs():
        q = torch.randn(3, 5, 16, generator=gen)
        kv = torch.randn(3, 7, mha.kdim, generator=gen)
        if not mha.batch_first:
            q, kv = q.transpose(0, 1), kv.transpose(0, 1)
        calls: list[tuple[Any, ...]] = [(kv, kv, {})]
        if mha.kdim == 16:
            mask = torch.rand(5, 5, generator=gen) > 0.7
            mask.fill_diagonal_(False)
            pad = torch.zeros(3, 5, dtype=torch.bool)
            pad[0, -1] = True
            calls += [(q, q, {}), (q, q, {"attn_mask": mask, "key_padding_mask": pad}),
                      (q, q, {"attn_mask": mask.float() * -1e4}), (q, q, {"average_attn_weights": False})]
        for key, value, kw in calls:
            with torch.no_grad():
                a_out, a_w = mha(q, key, value, need_weights=need_weights, **kw)
                b_out, b_w = twin(q, key, value, need_weights=need_weights, **kw)
            # equal up to float32 summation order (three GEMMs for the packed one; SDPA's kernel)
            torch.testing.assert_close(b_out, a_out, rtol=0, atol=1e-6)
            assert (a_w is None) == (b_w is None)
            if a_w is not None:
                torch.testing.assert_close(b_w, a_w, rtol=0, atol=1e-6)


def test_explicit_attention_refuses_what_it_cannot_write() -> None:
    model = nn.Sequential(nn.Linear(4, 8))
    model.add_module("attn", nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(ValueError, match=r"'attn' uses add_bias_kv=True"):
        explicit_attention_(model)
    twin = ExplicitAttention.from_mha(nn.MultiheadAttention(8, 2), "blocks.0.attn")
    with pytest.raises(ValueError, match=r"'blocks.0.attn'.*batched inputs"):
        twin(torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 8))


class Transformer(nn.Module):
    """Patch conv on 8x8 RGB -> a batch-first post-norm encoder -> a sequence-first pre-norm
    encoder -> cross-attention (kdim = vdim = 12: separate q/k/v weights) -> mean -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, 4)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.post = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.pre = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, norm_first=True, activation="gelu"), 1,
                                         enable_nested_tensor=False)
        self.memory = nn.Linear(16, 12)
        self.cross = nn.MultiheadAttention(16, 2, kdim=12, vdim=12, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.post(self.patch(x).flatten(2).transpose(1, 2))
        t = self.pre(t.transpose(0, 1)).transpose(0, 1)
        mem = self.memory(t)
        t = t + self.cross(t, mem, mem, need_weights=False)[0]
        return self.head(t.mean(1))


def _calib(shape: tuple[int, ...] = (3, 8, 8)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(8, *shape, generator=gen) for _ in range(2)]


def _assert_clean_export(report: Any, model: nn.Module, x: torch.Tensor, projections: list[str]) -> None:
    """Every projection Q/DQ'd per channel from an int8 initializer, no rule error, ORT == reference."""
    layers = {w.layer: w for w in report.weights}
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(report.path)).graph.initializer}
    for name in projections:
        w = layers[name]
        assert inits[f"{w.tensor}_quantized"].dtype == np.int8
        assert inits[f"{w.tensor}_scale"].shape == (w.shape[w.axis],)  # per output channel
        assert w.inputs[0] in report.act_scales  # the projection's input is quantized
    assert [v for v in check_tensorrt_compat(report.path) if v.severity == "error"] == []
    res = verify_export(report, model=model, images=x, lint=False)
    assert res["onnx_checker"] == "ok" and res["trt_rule_errors"] == 0
    tf = res["vs_fake_quant"]["teacher_forced"]
    assert tf["sites"] == len(report.activations) and tf["sites_not_in_reference"] == []
    assert tf["unexplained"] == 0 and tf["max_code_diff"] <= 1
    assert tf["outputs"]["max_abs"] < 1e-4
    assert res["vs_fake_quant"]["free_running"]["argmax_agree"] >= 0.75


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, nn.Module, dict[str, Any], bool]:
    torch.manual_seed(0)
    model = Transformer().eval()
    before = snapshot(model)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    report = export_onnx_qdq(model, _calib(), tmp_path_factory.mktemp("mha") / "transformer.onnx")
    return report, model, before, fastpath == torch.backends.mha.get_fastpath_enabled()


def test_transformer_encoders_and_cross_attention_export(transformer: tuple[Any, nn.Module, Any, bool]) -> None:
    report, model, before, fastpath_restored = transformer
    attn = ["post.layers.0.self_attn", "pre.layers.0.self_attn", "cross"]
    projections = [f"{a}.{p}" for a in attn for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
    assert set(projections) <= {w.layer for w in report.weights}
    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert not {o for o in ops if "Attention" in o}
    _assert_clean_export(report, model, _calib()[0], projections)
    # q k^T and attn v: both inputs of the two activation MatMuls of each attention quantized
    graph = onnx.load(str(report.path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name for t in graph.initializer}

    def quantized_activation(t: str) -> bool:
        dq = producer.get(t)
        return dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] not in inits

    bmm = [n for n in graph.node if n.op_type == "MatMul" and not any(
        producer.get(t) is not None and producer[t].input[0] in inits for t in n.input)]
    assert len(bmm) == 2 * len(attn)
    assert all(quantized_activation(t) for n in bmm for t in n.input)
    assert_untouched(model, before)
    assert fastpath_restored
    assert all(isinstance(m, nn.MultiheadAttention) for m in (model.cross, model.pre.layers[0].self_attn))


def test_attention_names_of_quantize_weights_select_the_projections(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Transformer().eval()
    report = export_onnx_qdq(model, _calib()[:1], tmp_path / "x.onnx",
                             exclude=["post.layers.0.self_attn.in_proj_weight", "cross.k_proj_weight"])
    floats = {u[0] for u in report.unquantized if u[1] == "MatMul"}
    quantized = {w.layer for w in report.weights}
    for p in ("q_proj", "k_proj", "v_proj"):
        assert f"post.layers.0.self_attn.{p}" not in quantized
        assert f"pre.layers.0.self_attn.{p}" in quantized
        assert f"/post/layers.0/self_attn/{p}/MatMul" in floats
    assert "cross.k_proj" not in quantized and "cross.q_proj" in quantized
    assert report.settings["exclude"] == sorted(
        ["post.layers.0.self_attn.q_proj", "post.layers.0.self_attn.k_proj", "post.layers.0.self_attn.v_proj",
         "cross.k_proj"])


def test_small_vit_exports_and_matches_ort(tmp_path: Path) -> None:
    vit = pytest.importorskip("benchmarks.archs.vit")
    torch.manual_seed(0)
    model = vit.VisionTransformer(32, 16, 2, 4, 32, 64, 10).eval()
    before = snapshot(model)
    report = export_onnx_qdq(model, _calib((3, 32, 32)), tmp_path / "vit.onnx")
    projections = [f"encoder.layers.encoder_layer_{i}.self_attention.{p}"
                   for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
    _assert_clean_export(report, model, _calib((3, 32, 32))[0], projections)
    assert_untouched(model, before)


class TinyAttention(nn.Module):
    """Tokens of a 4x4 RGB image -> Linear -> self-attention (packed in_proj_weight) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.flatten(2).transpose(1, 2))
        return self.head(self.attn(t, t, t, need_weights=False)[0].mean(1))


def test_weight_ranges_for_in_proj_weight_are_split_into_the_projections(tmp_path: Path) -> None:
    from requant_plugin import RangeSpec, estimate_range
    from requant_plugin.options import PerChannel

    torch.manual_seed(0)
    model = TinyAttention().eval()
    w = model.attn.in_proj_weight
    spec = RangeSpec(bits=4, symmetric=True, granularity=PerChannel(0), convention="tensorrt")
    est = estimate_range(w.detach(), spec)
    with torch.no_grad():
        w.copy_(est.fake_quantize(w.detach()))
    calib = [torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))]
    report = export_onnx_qdq(model, calib, tmp_path / "pinned.onnx", weight_bits=4,
                             weight_ranges={"attn.in_proj_weight": est})
    assert report.settings["weight_ranges"] == ["attn.k_proj", "attn.q_proj", "attn.v_proj"]
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(report.path)).graph.initializer}
    for k, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        info = report.weight(f"attn.{proj}")
        codes, scale = inits[f"{info.tensor}_quantized"].T, inits[f"{info.tensor}_scale"]  # MatMul: [in, out]
        rows = slice(16 * k, 16 * (k + 1))
        np.testing.assert_array_equal(scale, est.scale[rows].float().numpy())
        np.testing.assert_allclose(codes * scale[:, None], w.detach()[rows].numpy(), rtol=1.2e-7, atol=0)
    tf = verify_export(report, model=model, images=calib[0], lint=False)["vs_fake_quant"]["teacher_forced"]
    assert tf["unexplained"] == 0 and tf["outputs"]["max_abs"] < 1e-4
