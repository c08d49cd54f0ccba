"""TerraSeg's library: AOIs, grids, sources, reading, tiling, inference, export. Never imports streamlit or rq."""

__version__ = "0.1.0"
