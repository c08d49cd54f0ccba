"""Areas and grids: the AOI, the job's grid, tile layouts, chunks of large grids, place search."""
