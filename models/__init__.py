"""The model layer: architectures and pretrained wrappers, and the registry of model cards."""
