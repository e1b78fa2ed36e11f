"""torch.hub entry points: torch.hub.load(REPO_DIR, ENTRY, source="local", ...).

The entry points are `alexnet` (a model) and `alexnet_pretrained` (a model with its
classes and preprocessing). Give `weights` a checkpoint path (ours, .pt or .safetensors,
torchvision's AlexNet state_dict, a .caffemodel) or a published net by name,
"torchvision" or "caffe" (torch.hub's cache; downloaded once), or none for a fresh net.
"""

import os
import sys

dependencies = ["torch", "torchvision", "numpy", "PIL"]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))


def alexnet(weights=None, variant=None, num_classes=None, **options):
    """The paper's AlexNet (or "one-tower", "torchvision", "caffe", "six-conv"); with
    weights (a checkpoint path or "torchvision" / "caffe"), the file's net, trained, in
    eval mode, with a fresh fc8 when num_classes differs from the file's."""
    from alexnet import create_model

    return create_model(variant, num_classes=num_classes, weights=weights, **options)


def alexnet_pretrained(weights):
    """Weights as `alexnet.load` gives them: .model, .transforms(), .meta["categories"]."""
    from alexnet import load

    return load(weights)
