"""The trained depthwise network measured like the ResNets: the zoo's CIFAR MobileNetV2 (width 0.5).

``python -m benchmarks.mobilenetv2 [--quick] [--models mobilenetv2 resnet20]``

Weights-only W8/W6/W4/W3 (REQuant's paper setting, per-channel, ``beyond``, the range-search
peers of the accuracy tables, same ONNX Runtime evaluation), full W8A8 integer PTQ per tensor and
per channel through ``convert_fx`` (x86) and pt2e (torch's defaults vs the REQuant factories),
and the depthwise diagnosis: per-layer weight SQNR with BN folded, per tensor vs per channel.
Writes ``docs/results-mobilenetv2.md`` and ``docs/img/mobilenetv2_*.png``; results are cached
in ``benchmarks/results/mobilenetv2.json``.
"""
