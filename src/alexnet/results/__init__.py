"""What a trained net gives back (§6): loading a checkpoint for inference, top-k
metrics, evaluation with one or ten crops, predictions, nearest neighbours in fc7
space, the paper's figures, the HTML report and the ONNX export."""
