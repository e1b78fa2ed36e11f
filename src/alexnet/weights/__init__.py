"""Trained nets as files: our checkpoint format (`checkpoint`), the run directory
(`rundir`), the published ImageNet nets by name (`hub`, torch.hub's cache and a checked
download), Caffe's .caffemodel files (`caffe`), loading any of them or a bare state_dict
(`load`), and copying the layers that fit into another net (`transfer`). ILSVRC-2012's
class list is data's (`data.imagenet`)."""
