"""What a job writes: COGs, previews, overlays for the map, vector outputs and map comparisons."""
