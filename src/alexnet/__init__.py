"""AlexNet as published (Krizhevsky, Sutskever, Hinton, NIPS 2012), in PyTorch.

The package imports torch only when a name that needs it is first used (PEP 562), so
`alexnet --version` and `alexnet VERB --help` answer at once.

Where things are, each stage importing only the ones before it
(scripts/import_graph.py checks it):
    runtime/     device and precision, torch.distributed, allocator, files, errors, seeds
    data/        prepare (images -> store), the store, the loader and the augmentation
    model/       the network of §3, its LRN, the two-tower split, the layer table
    kernels/     fast CPU kernels, each equal to a plain module, and the execution plan
    weights/     trained nets as files: our checkpoint format, the run directory, the
                 published ImageNet nets by name, Caffe's files, loading any of them
    evaluation/  the top-k tally, a split's errors (1 or 10 crops) and fc7 features
    results/     evaluate, predict, retrieval, features, units, figures, report, export
    microscope/  every unit of a net as a static site: top patches, feature visualisation
    train/       config and recipes, optimiser and schedules, state, the loop
    studies/     the ablation studies
    bench/       throughput against baselines measured in the same run
    cli.py       the `alexnet` command: argument wiring only
"""

__version__ = "0.1.0"

_LAZY = {
    "AlexNet": "alexnet.model",
    "create_model": "alexnet.results.pretrained",
    "load": "alexnet.results.pretrained",
    "list_weights": "alexnet.weights.hub",
    "plain": "alexnet.kernels.plan",
    "tune_cpu_allocator": "alexnet.runtime.allocator",
    "Pretrained": "alexnet.results.pretrained",
}

__all__ = [
    "AlexNet",
    "Pretrained",
    "create_model",
    "list_weights",
    "load",
    "plain",
    "tune_cpu_allocator",
    "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alexnet' has no attribute {name!r}")
