"""Training in PyTorch: the one loop (loop.py) and the recipes it runs (heads.py: a new head on a base's
features and a fine-tuned Dynamic World; seeds.py: a seed architecture on a patch dataset), their objectives
(objectives.py), and the one way a trained model is installed as a version (install.py)."""
