"""TerraSeg's library: AOIs, grids, sources, reading, tiling, inference, export. Never imports streamlit or rq."""

__version__ = "0.2.0"  # part of every spec hash: bump when outputs change, so old results are not reused
