"""AlexNet as published (Krizhevsky, Sutskever, Hinton, NIPS 2012), in PyTorch."""

__version__ = "0.1.0"

from .model import AlexNet, create_model  # noqa: E402

__all__ = ["AlexNet", "create_model", "__version__"]
