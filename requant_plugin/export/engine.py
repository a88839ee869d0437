"""Build (and run) a strongly typed TensorRT engine from the Q/DQ ONNX.

Needs the ``tensorrt`` Python package (10.x or 11.x) and a CUDA GPU. Without it,
:func:`build_engine` raises ImportError naming the extra and prints the equivalent
``trtexec`` command, which is also available from :func:`trtexec_command`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..deps import MissingDependency, install_hint, require
from .atomic import write_bytes_atomic


def _input_dims(onnx_path: str | os.PathLike[str]) -> tuple[str, list[int | str]]:
    onnx = require("onnx", "requant_plugin.export")
    model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"{onnx_path} has {len(inputs)} inputs; build_engine handles one input")
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in inputs[0].type.tensor_type.shape.dim
    ]
    return inputs[0].name, dims


def _profile_shapes(dims: Sequence[int | str], batches: tuple[int, int, int]) -> list[tuple[int, ...]]:
    dynamic = [k for k, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
    if any(k != 0 for k in dynamic):
        raise ValueError(
            f"input shape {list(dims)} has dynamic dimensions other than the batch; "
            "export with fixed spatial sizes"
        )
    return [tuple(b if k == 0 and dynamic else int(d) for k, d in enumerate(dims)) for b in batches]


def trtexec_command(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    min_batch: int = 1,
    opt_batch: int = 32,
    max_batch: int = 256,
    trt_major: int = 10,
) -> str:
    """The ``trtexec`` line that builds the same engine (``--stronglyTyped`` on 10.x)."""
    name, dims = _input_dims(onnx_path)
    cmd = f"trtexec --onnx={os.fspath(onnx_path)} --saveEngine={os.fspath(engine_path)}"
    if trt_major < 11:
        cmd += " --stronglyTyped"
    if any(not isinstance(d, int) or d <= 0 for d in dims):
        shapes = _profile_shapes(dims, (min_batch, opt_batch, max_batch))
        for flag, shape in zip(("min", "opt", "max"), shapes, strict=False):
            cmd += f" --{flag}Shapes={name}:{'x'.join(map(str, shape))}"
    return cmd


def _import_tensorrt(onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str]) -> Any:
    """The ``tensorrt`` module; without it print and raise (an ImportError) the ``trtexec`` line."""
    try:
        return require("tensorrt", "build_engine")
    except MissingDependency as exc:
        try:
            cmd = trtexec_command(onnx_path, engine_path)
        except Exception:
            cmd = (
                f"trtexec --onnx={os.fspath(onnx_path)} --saveEngine={os.fspath(engine_path)} --stronglyTyped"
            )
        print(f"TensorRT is not installed; the equivalent command is:\n  {cmd}", file=sys.stderr)
        raise MissingDependency(
            f"build_engine needs TensorRT 10/11 and a CUDA GPU ({exc.__cause__}); install it with: "
            f"{install_hint('tensorrt')}, or build with:\n  {cmd}"
        ) from exc


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    min_batch: int = 1,
    opt_batch: int = 32,
    max_batch: int = 256,
    workspace_gib: float = 4.0,
    verbose: bool = False,
) -> Path:
    """Parse the Q/DQ ONNX and build a strongly typed engine (written atomically).

    Strongly typed: on TensorRT 10.x the ``STRONGLY_TYPED`` network flag is set (the same as
    ``trtexec --stronglyTyped``); on 11.x it is the only mode. Precision therefore comes from the
    Q/DQ nodes and the ONNX dtypes only (no ``--int8``/``--fp16`` flags). A dynamic batch axis
    gets one optimization profile ``min/opt/max_batch``.

    Raises:
        ImportError: ``tensorrt`` is missing (the message names the extra and the trtexec line).
        RuntimeError: the parser or the builder failed (with the parser's errors).
    """
    if not Path(onnx_path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    trt = _import_tensorrt(onnx_path, engine_path)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".")[0])
    flags = 0
    if major < 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n" + "\n".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    name, dims = _input_dims(onnx_path)
    if any(not isinstance(d, int) or d <= 0 for d in dims):
        profile = builder.create_optimization_profile()
        lo, opt, hi = _profile_shapes(dims, (min_batch, opt_batch, max_batch))
        profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    return write_bytes_atomic(engine_path, bytes(serialized))


def run_engine(engine_path: str | os.PathLike[str], x: np.ndarray) -> np.ndarray:
    """Run a built engine on one batch ``x`` (float32 NCHW) with torch CUDA buffers."""
    import torch

    trt = _import_tensorrt(engine_path, engine_path)
    if not torch.cuda.is_available():
        raise RuntimeError("run_engine needs a CUDA build of torch and a GPU")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outs = [n for n in names if n not in ins]
    xin = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
    context.set_input_shape(ins[0], tuple(xin.shape))
    context.set_tensor_address(ins[0], xin.data_ptr())
    dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
    buffers = {}
    for n in outs:
        shape = tuple(context.get_tensor_shape(n))
        buffers[n] = torch.empty(
            shape, dtype=dtypes.get(engine.get_tensor_dtype(n), torch.float32), device="cuda"
        )
        context.set_tensor_address(n, buffers[n].data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed")
    stream.synchronize()
    return buffers[outs[0]].float().cpu().numpy()
