"""torch.hub entry points: torch.hub.load(REPO_DIR, "alexnet", source="local", ...).

Nothing is downloaded: give the path of a checkpoint (ours, .pt or .safetensors, or
torchvision's AlexNet state_dict) to get trained weights, or none for a fresh net.
"""

import os
import sys

dependencies = ["torch", "torchvision", "numpy", "PIL"]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))


def alexnet(weights=None, variant="paper", num_classes=1000, **options):
    """The paper's AlexNet (or "one-tower", "torchvision"); with weights (a checkpoint
    path), the file's net, trained, in eval mode."""
    from alexnet import create_model

    return create_model(variant, num_classes=num_classes, weights=weights, **options)


def alexnet_pretrained(weights):
    """A checkpoint as `alexnet.load` gives it: .model, .transforms(), .meta["categories"]."""
    from alexnet import load

    return load(weights)
