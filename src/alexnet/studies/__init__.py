"""The paper's claimed effects, measured: `alexnet ablate` (ablate.py), its runs
(runs.py), the small CIFAR net of §3.1 and §3.3 (cifar_net.py), and its outputs
(report.py)."""
