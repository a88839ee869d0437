"""Peer PTQ methods run by their own released code (Brevitas GPTQ / GPFQ / learned round,
NVIDIA ModelOpt mse / local_hessian / gptq, AIMET AdaRound / SeqMSE) against REQuant's "paper"
and "beyond" recipes on the shared CIFAR ResNets: same calibration images, same evaluator.

``python -m benchmarks.results_peers [--quick]`` writes ``docs/results-peers.md`` and
``docs/img/results_peers.png``; results are cached in ``benchmarks/results/peers*.json``.
"""
