"""``nn.MultiheadAttention`` as explicit Linear layers, for the Q/DQ export and its reference.

TorchScript exports an ``nn.MultiheadAttention`` either as ``aten::_native_multi_head_attention``
(the fused fast path in eval; not an ONNX op) or, with the fast path off, as a MatMul on a
constant-folded transpose of ``in_proj_weight``: a weight that is no module's ``weight``, so
neither the layer names nor the fake-quant reference can follow it. The export therefore works on
a copy in which every attention is an :class:`ExplicitAttention`: the same parameters as four
``nn.Linear`` layers ``q_proj``, ``k_proj``, ``v_proj`` (rows of ``in_proj_weight``, or the
separate ``q/k/v_proj_weight`` when ``kdim``/``vdim`` differ) and ``out_proj``, and the attention
math written out, ``softmax((x W_q^T + b_q) / sqrt(d) (x W_k^T + b_k)^T + mask) (x W_v^T + b_v)``.
Each projection is then an ordinary Linear layer: per-channel int8 weights, quantized input.

The activation x activation MatMuls (``q k^T`` and ``attn v``) follow the export's rule for every
MatMul: both inputs get a per-tensor Q/DQ (q scaled by ``1/sqrt(d)``, k transposed, the softmax
output, v; whether TensorRT fuses it into INT8 attention kernels is not verified here); ``exclude`` with their
node names keeps them float. The reference model fake-quantizes the same four tensors
(:func:`attach_matmul_quantizers`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.fx
from torch import nn

__all__ = [
    "ExplicitAttention",
    "ExplicitEncoder",
    "attach_matmul_quantizers",
    "attention_aliases",
    "explicit_attention_",
    "mha_fastpath_off",
    "names_to_attention",
    "split_attention_ranges",
]

#: The tensors of one attention that feed its activation x activation MatMuls, in graph order.
MATMUL_INPUTS = ("q", "k", "attn", "v")


@contextlib.contextmanager
def mha_fastpath_off() -> Iterator[None]:
    """Disable PyTorch's fused MHA/Transformer fast path for the block (restored afterwards)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` ``[out, in]`` and ``bias``."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                      dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight.detach())
        if bias is not None:
            assert layer.bias is not None
            layer.bias.copy_(bias.detach())
    return layer


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True = not allowed) as ``-inf``/0; a float mask as it is."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


def masked_scores(
    scores: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None
) -> torch.Tensor:
    """``scores [N, H, L, S] + attn_mask ([L, S] or [N*H, L, S]) + key_padding_mask [N, S]``, boolean
    masks as ``-inf`` where True (``nn.MultiheadAttention``'s rules); one leaf for ``torch.fx``."""
    n, h, tgt_len, src_len = scores.shape
    mask = _additive(attn_mask, scores.dtype)
    if mask is not None:
        scores = scores + (mask.reshape(n, h, tgt_len, src_len) if mask.dim() == 3 else mask)
    pad = _additive(key_padding_mask, scores.dtype)
    if pad is not None:
        scores = scores + pad.reshape(n, 1, 1, src_len)
    return scores


torch.fx.wrap("masked_scores")


class ExplicitAttention(nn.Module):
    """``nn.MultiheadAttention`` (eval) as ``out_proj(softmax(q k^T / sqrt(d) + mask) v)`` with
    ``q, k, v = q_proj(query), k_proj(key), v_proj(value)`` split into ``num_heads`` heads.

    Built by :meth:`from_mha` from a module called ``name`` (used in error messages). Outputs equal
    the attention's to float32 rounding (the packed ``in_proj_weight`` becomes three GEMMs).
    ``quant`` holds optional fake quantizers of ``MATMUL_INPUTS`` (set by the reference only).
    """

    # read by nn.TransformerEncoder(Layer)'s fast-path checks: never take the fused kernel
    _qkv_same_embed_dim = False
    in_proj_weight = None
    in_proj_bias = None

    def __init__(
        self, projections: tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear], num_heads: int, *,
        batch_first: bool, name: str = "",
    ) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = projections
        self.embed_dim, self.num_heads = self.q_proj.out_features, num_heads
        self.batch_first, self.name = batch_first, name
        self.head_dim = self.embed_dim // num_heads
        self.quant = nn.ModuleDict()

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention, name: str = "") -> ExplicitAttention:
        """The explicit twin of ``mha`` (copies of its parameters; ``mha`` is not modified)."""
        if mha.bias_k is not None or mha.add_zero_attn:
            what = "add_bias_kv=True" if mha.bias_k is not None else "add_zero_attn=True"
            raise ValueError(
                f"nn.MultiheadAttention {name!r} uses {what}, which the ONNX Q/DQ export does not write out; "
                f"export a model built without {what.split('=')[0]} (the attention's extra key/value rows "
                "have no Linear form here)"
            )
        e = mha.embed_dim
        b = mha.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e : 2 * e], b[2 * e :])
        if mha.in_proj_weight is not None:
            w = mha.in_proj_weight
            wq, wk, wv = w[:e], w[e : 2 * e], w[2 * e :]
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        out = _linear(mha.out_proj.weight, mha.out_proj.bias)
        projections = (_linear(wq, bq), _linear(wk, bk), _linear(wv, bv), out)
        return cls(projections, mha.num_heads, batch_first=mha.batch_first, name=name)

    def _fq(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self.quant[key](x) if key in self.quant else x

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, L, E] -> [N, H, L, d]``."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(output, attention weights or None)`` in ``nn.MultiheadAttention``'s layout."""
        if not isinstance(query, torch.fx.Proxy) and query.dim() != 3:
            raise ValueError(
                f"attention {self.name!r}: the export needs batched inputs (3-D query/key/value), got a "
                f"{query.dim()}-D query; add the batch axis before calling nn.MultiheadAttention"
            )
        if not self.batch_first:  # to [N, L, E]
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, tgt_len, src_len = query.shape[0], query.shape[1], key.shape[1]
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        scores = self._fq("q", q * math.sqrt(1.0 / self.head_dim)) @ self._fq("k", k.transpose(-2, -1))
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(tgt_len, src_len, dtype=torch.bool, device=query.device).triu(1)
        if attn_mask is not None or key_padding_mask is not None:
            scores = masked_scores(scores, attn_mask, key_padding_mask)
        attn = torch.softmax(scores, dim=-1)
        ctx = self._fq("attn", attn) @ self._fq("v", v)
        out = self.out_proj(ctx.transpose(1, 2).reshape(n, tgt_len, self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, attn.mean(dim=1) if average_attn_weights else attn


class ExplicitEncoder(nn.Module):
    """``nn.TransformerEncoder`` without its nested-tensor fast path (``torch.fx`` can trace it):
    ``norm(layer_n(... layer_1(src)))``, the same ``layers`` and ``norm`` modules."""

    def __init__(self, encoder: nn.TransformerEncoder) -> None:
        super().__init__()
        self.layers, self.norm = encoder.layers, encoder.norm

    def forward(
        self,
        src: torch.Tensor,
        mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool | None = None,
    ) -> torch.Tensor:
        """The encoder's output for ``src`` (masks passed to every layer, as the original does)."""
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return self.norm(out) if self.norm is not None else out


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def explicit_attention_(model: nn.Module) -> list[str]:
    """Replace every ``nn.MultiheadAttention`` of ``model`` (in place: call it on a copy) by its
    :class:`ExplicitAttention` and every ``nn.TransformerEncoder`` by an :class:`ExplicitEncoder`;
    return the attention names replaced. Raises ValueError naming a layer that cannot be written
    out (``add_bias_kv``, ``add_zero_attn``)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if "" in {n for n, _ in found}:
        raise ValueError("the model is itself an nn.MultiheadAttention; wrap it in a module that calls it")
    for name, mha in found:
        _replace(model, name, ExplicitAttention.from_mha(mha, name))
    for name, enc in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.TransformerEncoder)]:
        if name:
            _replace(model, name, ExplicitEncoder(enc))
    return [n for n, _ in found]


#: ``quantize_weights`` names of attention weights -> the export's Linear layers.
_ALIASES = {
    "in_proj_weight": ("q_proj", "k_proj", "v_proj"),
    "q_proj_weight": ("q_proj",),
    "k_proj_weight": ("k_proj",),
    "v_proj_weight": ("v_proj",),
}


def names_to_attention(name: str) -> tuple[str, ...]:
    """``block.attn.in_proj_weight`` (a ``quantize_weights`` name) -> the export's layers
    ``block.attn.q_proj``, ``.k_proj``, ``.v_proj``; any other name -> ``(name,)``."""
    parent, _, leaf = name.rpartition(".")
    if leaf in _ALIASES:
        return tuple(f"{parent}.{p}" if parent else p for p in _ALIASES[leaf])
    return (name,)


def attention_aliases(config: Any) -> Any:
    """``config`` (an :class:`~.config.ExportConfig`) with ``exclude`` and ``overrides`` entries
    naming ``quantize_weights``' attention weights (``attn.in_proj_weight``) given to the
    export's layers (``attn.q_proj``, ``attn.k_proj``, ``attn.v_proj``)."""
    if not any(len(names_to_attention(n)) > 1 or n != names_to_attention(n)[0]
               for n in [*config.exclude, *config.overrides]):
        return config
    exclude = tuple(x for name in config.exclude for x in names_to_attention(name))
    overrides = {x: v for name, v in config.overrides.items() for x in names_to_attention(name)}
    return dataclasses.replace(config, exclude=exclude, overrides=overrides)


def split_attention_ranges(table: Mapping[str, Any]) -> dict[str, Any]:
    """``weight_ranges`` with ``attn.in_proj_weight`` (rows ``[q; k; v]``) split into the ranges of
    ``attn.q_proj``, ``.k_proj``, ``.v_proj`` (per-channel: a third of the rows each; per-tensor:
    the same range), and ``attn.q_proj_weight`` renamed ``attn.q_proj`` (likewise k, v)."""
    out: dict[str, Any] = {}
    for name, est in table.items():
        targets = names_to_attention(name)
        if len(targets) == 1:
            out[targets[0]] = est
            continue
        for k, target in enumerate(targets):
            if not getattr(est, "per_channel", False):
                out[target] = est
                continue
            rows = est.scale.numel() // 3
            part = {
                f.name: getattr(est, f.name)[k * rows : (k + 1) * rows]
                for f in dataclasses.fields(est)
                if isinstance(getattr(est, f.name), torch.Tensor) and getattr(est, f.name).dim() >= 1
                and getattr(est, f.name).shape[0] == 3 * rows
            }
            out[target] = dataclasses.replace(est, **part)
    return out


def attach_matmul_quantizers(
    model: nn.Module,
    matmuls: Mapping[str, list[tuple[str | None, str | None]]],
    make: Callable[[str], nn.Module],
) -> int:
    """Give each :class:`ExplicitAttention` of ``model`` the fake quantizers of its two activation
    MatMuls: ``matmuls[scope]`` lists the quantized ``(input 0, input 1)`` ONNX tensors of the
    MatMuls of the attention module ``scope``, in graph order (``q k^T`` first, then ``attn v``);
    ``make(tensor)`` builds one quantizer. Returns the number of quantizers attached."""
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, ExplicitAttention) or name not in matmuls:
            continue
        pairs = matmuls[name]
        if len(pairs) != 2:
            raise ValueError(
                f"attention {name!r}: expected 2 activation MatMuls in the ONNX graph, found {len(pairs)}"
            )
        tensors: list[Any] = [t for pair in pairs for t in pair]
        for key, tensor in zip(MATMUL_INPUTS, tensors, strict=True):
            if tensor is not None:
                module.quant[key] = make(tensor)
                count += 1
    return count
