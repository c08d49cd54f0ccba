# TerraSeg's images, one stage per role (docker-compose.yml builds each with `target:`):
#   app         the Streamlit web app
#   worker-cpu  a worker with the CPU build of torch (downloads, and whole jobs on machines without a GPU)
#   worker-gpu  a worker with a CUDA build of torch (the NVIDIA container toolkit gives it the GPU)
# Versions come from pyproject.toml, as for `make install`. Not built in CI (no Docker engine there): see the
# README, "Docker compose".

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# rasterio, pyogrio and lightgbm bring GDAL and their libraries in their wheels; lightgbm needs OpenMP.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# Nothing runs as root: one unprivileged user owns the cache volume's mount point.
RUN useradd --create-home --uid 10001 terraseg && mkdir /cache && chown terraseg /cache
WORKDIR /opt/terraseg
COPY pyproject.toml README.md LICENSE ./
COPY core ./core
COPY models ./models
COPY worker ./worker
COPY pages ./pages
COPY app.py ./
COPY .streamlit/config.toml ./.streamlit/config.toml
ENV TERRASEG_CACHE_DIR=/cache TERRASEG_SECRETS_DIR=/run/secrets

FROM base AS cpu
# torch==2.13.0 from PyPI is the CPU build (pyproject.toml pins it).
RUN pip install --quiet .
USER terraseg

FROM cpu AS app
EXPOSE 8501
CMD ["streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501", \
     "--server.headless", "true", "--browser.gatherUsageStats", "false"]

FROM cpu AS worker-cpu
CMD ["terraseg", "worker"]

FROM base AS worker-gpu
# The CUDA build of the same torch version first, so that installing TerraSeg keeps it (the pin is met).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install --quiet --index-url "$TORCH_INDEX_URL" torch==2.13.0 && pip install --quiet .
ENV TERRASEG_DEVICE=cuda
USER terraseg
CMD ["terraseg", "worker"]
