"""From scenes to class probabilities: reading onto the grid, tiling and inference, stitching, per-date
analysis, series and monthly composites, strip checkpoints."""
