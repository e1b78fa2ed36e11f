"""Trained weights from outside a training run: the published ImageNet nets by name
(`hub`, torch.hub's cache and a checked download), Caffe's .caffemodel files (`caffe`),
and ILSVRC-2012's class list (`imagenet`)."""
