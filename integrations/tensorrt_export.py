#!/usr/bin/env python
"""REQuant -> TensorRT: calibrate, write an explicitly quantized (Q/DQ) ONNX, verify, build.

Steps: model (zoo name, or a state_dict with its architecture) + calibration images ->
REQuant weight and activation ranges -> Q/DQ ONNX (+ optional TensorRT <= 10 calibration cache)
-> verification on CPU (onnx.checker, TensorRT rules, polygraphy lint, ONNX Runtime vs the
PyTorch fake-quant model, ONNX Runtime accuracy FP32 vs Q/DQ) -> a TensorRT engine when the
``tensorrt`` package and a GPU are present (otherwise the equivalent ``trtexec`` command).

Examples::

    python integrations/tensorrt_export.py --model resnet20 --out build/trt
    python integrations/tensorrt_export.py --model resnet56 --weight-bits 4 --space sqrt --out build/trt
    python integrations/tensorrt_export.py --model resnet56 --weight-bits 4 --recipe beyond-tensorrt --out build/trt
    python integrations/tensorrt_export.py --model smallcnn --weights cnn.pt --data digits --out build/trt

Exit status: 0 when every check passed, 1 when a check failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="zoo name (resnet20/32/44/56) or 'smallcnn'")
    p.add_argument("--weights", help="state_dict file (default for zoo names: the shared pretrained file)")
    p.add_argument("--data", default=None, help="data set name for requant_plugin.data.load_dataset "
                   "(default: cifar10 for ResNets, else the default data set)")
    p.add_argument("--out", default="build/tensorrt", help="output folder (created)")
    p.add_argument("--calib-images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--weight-bits", type=int, default=8)
    p.add_argument("--space", choices=("uniform", "sqrt"), default="uniform")
    p.add_argument("--recipe", choices=("beyond-tensorrt",), default=None,
                   help="weights from quantize_weights(recipe=..., fold_bn=True) on the calibration images "
                        "(output objective, error-feedback codes, bias correction), exported as they are")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--fp16", action="store_true", help="float16 for the unquantized layers (opset >= 19)")
    p.add_argument("--eval-images", type=int, default=10000, help="test images for accuracy (0: skip)")
    p.add_argument("--calibration-cache", metavar="TRT_VERSION",
                   help="also write a TensorRT <= 10 calibration cache for this version (e.g. 10.3.0)")
    p.add_argument("--no-lint", action="store_true", help="skip polygraphy lint")
    p.add_argument("--no-engine", action="store_true", help="do not build a TensorRT engine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p


def _load(args: argparse.Namespace) -> tuple[nn.Module, Any]:
    from requant_plugin.data import default_dataset, load_dataset
    from requant_plugin.zoo import SmallCNN, available_models, load_model, load_state_dict_file

    name = args.model.strip().lower().replace("-", "")
    if name not in [*available_models(), "smallcnn"]:
        raise ValueError(f"unknown model {args.model!r}: use one of {[*available_models(), 'smallcnn']}")
    if name == "smallcnn" and not args.weights:
        raise ValueError("--model smallcnn needs --weights (a SmallCNN state_dict for this data set)")
    data_name = args.data or ("cifar10" if name in available_models() else None)
    data = load_dataset(data_name) if data_name else default_dataset()
    if name in available_models():
        return load_model(name, args.weights), data
    c, h, _ = data.input_shape
    model = SmallCNN(c, data.num_classes, h)
    model.load_state_dict(load_state_dict_file(args.weights), strict=True)
    return model.eval(), data


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    from requant_plugin.export import (
        ExportConfig,
        build_engine,
        export_onnx_qdq,
        run_engine,
        trtexec_command,
        verify_export,
        write_calibration_cache,
    )
    from requant_plugin.options import PerChannel, PerTensor

    try:
        config = ExportConfig(weight_bits=args.weight_bits, space=args.space, opset=args.opset, fp16=args.fp16,
                              granularity=PerTensor() if args.per_tensor else PerChannel(), progress=True)
        model, data = _load(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = (f"w{args.weight_bits}a8{'-sqrt' if args.space == 'sqrt' else ''}"
           f"{'-' + args.recipe if args.recipe else ''}{'-fp16' if args.fp16 else ''}")
    stem = f"{args.model}.{tag}"
    qdq_path, fp32_path = out / f"{stem}.onnx", out / f"{args.model}.fp32.onnx"
    calib = data.calibration_batches(min(args.calib_images, len(data.y_train)), args.batch_size, args.seed)
    try:
        ranges, exported = None, model
        if args.recipe:
            from requant_plugin import quantize_weights
            from requant_plugin.export.torch_export import export_fp32_onnx

            exported, ranges = quantize_weights(model, args.weight_bits, recipe=args.recipe, fold_bn=True,
                                                per_channel=not args.per_tensor, calibration_data=calib)
            # the FP32 reference stays the float model (the export's own would carry the W4 weights)
            proto, _, _ = export_fp32_onnx(model, calib[0][:1], opset=args.opset)
            fp32_path.write_bytes(proto.SerializeToString())
        report = export_onnx_qdq(exported, calib, qdq_path, config, weight_ranges=ranges,
                                 fp32_path=None if args.recipe else fp32_path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.calibration_cache:
        cache = write_calibration_cache(out / f"{stem}.cache", report.act_scales, args.calibration_cache)
        print(f"calibration cache: {cache}")
    n_eval = min(args.eval_images, len(data.y_test))
    loader = data.loader("test", 500, limit=n_eval) if n_eval > 0 else None
    x_check = data.x_test[: min(64, len(data.y_test))]
    res = verify_export(report, model=exported, images=x_check, fp32_path=fp32_path, test_loader=loader,
                        lint=not args.no_lint, progress=True)
    print(report)
    ok = res.get("onnx_checker") == "ok" and res.get("trt_rule_errors", 1) == 0
    if "vs_fake_quant" in res:
        tf = res["vs_fake_quant"]["teacher_forced"]
        print(f"ORT vs fake-quant: {tf['codes']:,} int8 codes, {tf['mismatch']} differ "
              f"(max {tf['max_code_diff']}), {tf['unexplained']} not explained by float32 summation order")
        ok = ok and tf["unexplained"] == 0
    if str(res.get("polygraphy_lint", "passed")).startswith("FAILED"):
        ok = False
    if not args.no_engine:
        engine_path = out / f"{stem}.plan"
        try:
            build_engine(qdq_path, engine_path)
            if loader is not None:
                correct = seen = 0
                for images, labels in loader:
                    pred = run_engine(engine_path, images.numpy()).argmax(1)
                    correct += int((pred == labels.numpy()).sum())
                    seen += len(labels)
                report.verification["accuracy_tensorrt"] = 100.0 * correct / seen
                print(f"TensorRT accuracy: {report.verification['accuracy_tensorrt']:.2f}%")
        except ImportError:
            cmd = trtexec_command(qdq_path, engine_path)
            print(f"TensorRT not available; build the engine with:\n  {cmd}")
    report.to_json(out / f"{stem}.report.json")
    print(json.dumps(report.verification, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
