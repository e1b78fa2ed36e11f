"""What is measured of a model, below both training and the results: the top-k tally
(`metrics`), a split's probabilities and errors with 1 or 10 crops (`split`), and a
split's fc7 features (`embed`). It imports data, model and runtime, nothing above."""
