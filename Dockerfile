# `accel-signs serve` in a container: the live page and its WebSocket on port 8000.
# docs/deploy.md walks through it; compose.yaml runs it with a health check and limits.
#
# BASE: any Debian or Ubuntu image. The default is the official Python slim image; for a GPU,
# e.g. --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 --build-arg TORCH_INDEX=
# (PyPI's torch is the CUDA build). A base without Python gets Debian's/Ubuntu's python3.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# Where torch comes from: PyTorch's CPU index by default (about 200 MB, instead of several GB of
# CUDA libraries a CPU server never uses); empty: PyPI, or a wheel in deploy/local/.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH="torch>=2.4,<3"
# serve: FastAPI, uvicorn, MediaPipe; hub: checkpoints given as hf://USER/NAME.
ARG EXTRAS=serve,hub
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; fi \
    && python3 -m venv /opt/venv
COPY deploy/local/ /local/
RUN if [ -f /local/ca.crt ]; then export PIP_CERT=/local/ca.crt; fi \
    && /opt/venv/bin/pip install --find-links /local ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH"
COPY pyproject.toml README.md /src/
COPY accel_signs /src/accel_signs
RUN if [ -f /local/ca.crt ]; then export PIP_CERT=/local/ca.crt; fi \
    && /opt/venv/bin/pip install --find-links /local "/src[$EXTRAS]"
# MediaPipe's wheels ask for OpenCV's GUI build (which needs libGL and X11: 400 MB of Mesa and
# LLVM in the image), and up to 0.10.21 for jax and jaxlib (and so SciPy: 440 MB, for its model
# maker). A server imports none of them: the headless OpenCV of the same version replaces the GUI
# build, and SciPy goes when nothing else needs it.
RUN if [ -f /local/ca.crt ]; then export PIP_CERT=/local/ca.crt; fi \
    && pip=/opt/venv/bin/pip \
    && $pip uninstall -y -q jax jaxlib \
    && if [ -z "$($pip show scipy 2>/dev/null | sed -n 's/^Required-by: *//p')" ]; then $pip uninstall -y -q scipy; fi \
    && opencv=$($pip show opencv-contrib-python 2>/dev/null | sed -n 's/^Version: *//p') \
    && if [ -n "$opencv" ]; then \
         $pip uninstall -y -q opencv-contrib-python && $pip install --no-deps "opencv-contrib-python-headless==$opencv"; fi

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
# MediaPipe's Tasks load libEGL and libGLESv2 even on the CPU: the GL dispatchers (libglvnd, no
# Mesa: nothing draws); python3 where the base lacks it (the venv's interpreter is the base's).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libgles2 $(command -v python3 >/dev/null || echo python3) \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /home/signs signs \
    && mkdir -p /cache/huggingface /cache/accel_signs /model \
    && chown -R signs: /cache
COPY --from=build /opt/venv /opt/venv
# Fail the build, not the first start, when a library is missing (MediaPipe's Tasks C library
# links the system's libEGL and libGLESv2).
RUN /opt/venv/bin/python -c "import ctypes, pathlib, accel_signs.serve.app, cv2, torch, mediapipe as mp; \
[ctypes.CDLL(str(so)) for so in pathlib.Path(mp.__file__).parent.glob('tasks/c/*.so')]"
# Every `serve` option can be set as ACCEL_SIGNS_SERVE_<OPTION> (compose.yaml's .env).
# The model: a folder mounted at /model, or ACCEL_SIGNS_SERVE_CHECKPOINT=hf://USER/NAME.
# /cache is a volume: the Hub's downloads and the MediaPipe landmarker bundles stay there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    ACCEL_SIGNS_CACHE=/cache/accel_signs \
    MPLCONFIGDIR=/tmp/matplotlib \
    ACCEL_SIGNS_SERVE_CHECKPOINT=/model \
    ACCEL_SIGNS_SERVE_HOST=0.0.0.0 \
    ACCEL_SIGNS_SERVE_PORT=8000
VOLUME /cache
USER signs
WORKDIR /home/signs
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ['ACCEL_SIGNS_SERVE_PORT'], timeout=4)"]
ENTRYPOINT ["accel-signs", "serve"]
