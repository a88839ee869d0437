"""Top-1 accuracy of a CIFAR model on fixed images.

Accuracy is measured with ONNX Runtime (CPU, 2 threads) on the FP32 ONNX graph of the model
carrying the fake-quantized weights: it gives the same top-1 as
``requant_plugin.data.evaluate_accuracy`` (checked by ``python -m benchmarks.accuracy_table
--quick``) and is 3-6x faster on this CPU. ``engine="torch"`` uses ``evaluate_accuracy`` instead.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from benchmarks.harness.data import Images

ENGINES = ("ort", "torch")


class Evaluator:
    """Top-1 accuracy (%) of a CIFAR model on fixed images, with ONNX Runtime or torch.

    Args:
        images: the evaluation images.
        engine: ``"ort"`` (ONNX Runtime CPU on an FP32 ONNX export) or ``"torch"``.
        batch_size: images per forward pass.
    """

    def __init__(self, images: Images, engine: str = "ort", batch_size: int = 500) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be 'ort' or 'torch', got {engine!r}")
        self.images, self.engine, self.batch_size = images, engine, batch_size

    def accuracy(self, model: nn.Module, engine: str | None = None) -> float:
        """Top-1 in percent = 100 * correct / n; ``engine`` overrides the default for this call."""
        eng = engine or self.engine
        if eng == "ort":
            return self._ort(model)
        return self._torch(model)

    def _torch(self, model: nn.Module) -> float:
        from requant_plugin.data import evaluate_accuracy

        x, y = torch.from_numpy(self.images.x), torch.from_numpy(self.images.y)
        batches = [
            (x[i : i + self.batch_size], y[i : i + self.batch_size])
            for i in range(0, len(y), self.batch_size)
        ]
        return float(evaluate_accuracy(model, batches))

    def _ort(self, model: nn.Module) -> float:
        import onnxruntime as ort

        buf = io.BytesIO()
        sample = torch.from_numpy(self.images.x[:1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(),
                (sample,),
                buf,  # type: ignore[arg-type]
                dynamo=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
        correct = 0
        for i in range(0, self.images.n, self.batch_size):
            logits = sess.run(None, {"x": self.images.x[i : i + self.batch_size]})[0]
            correct += int((logits.argmax(1) == self.images.y[i : i + self.batch_size]).sum())
        return 100.0 * correct / self.images.n
