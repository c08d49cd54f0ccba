"""Training data and evaluation without a deep-learning framework: labels, reference samples, patch datasets,
spatial splits and metrics."""
