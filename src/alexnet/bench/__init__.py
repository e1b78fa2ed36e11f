"""`alexnet bench`: throughput measured against a baseline in the same run, never in a
timed test. One module per benchmark; each returns a result dataclass that knows how
to print itself (`lines()`) and what its JSON is (`to_dict()`).

    prepare.py         prepare's CPU per image, coordinator vs workers
    data.py            our training feed vs torchvision's usual pipeline
    step.py            the training step: ours vs the naive eager net vs torchvision
    end_to_end.py      the whole path from a store, beside its two bounds
    model_parallel.py  the paper's two towers on two processes vs one device
"""
