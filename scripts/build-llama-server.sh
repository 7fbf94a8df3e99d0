#!/usr/bin/env bash
# Build llama.cpp's C++ server (`llama-server`) from the llama.cpp sources vendored in the pinned
# llama-cpp-python sdist, into a cache outside the repository; skip when it is already there.
# The remote tests run against this binary (tests find it through TEMPSCOPE_LLAMA_SERVER, else
# this cache path). Prints the binary's path on the last line of stdout.
#
#   scripts/build-llama-server.sh            # ~10 minutes on 2 cores the first time, then instant
#   LLAMA_SERVER_JOBS=1 scripts/build-llama-server.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The pin lives in pyproject.toml's `llama` extra; the binary is rebuilt only when it changes.
VERSION=$(sed -n 's/.*"llama-cpp-python[^"=]*==\([0-9][0-9.]*\)".*/\1/p' pyproject.toml | head -1)
if [ -z "$VERSION" ]; then
    echo "error: no llama-cpp-python==VERSION pin in pyproject.toml's llama extra; add one" >&2
    exit 1
fi
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tempscope/llama-server-$VERSION
BIN=$CACHE/llama-server
# Built for this CPU but without Intel AMX: ggml's AMX matmul, compiled in whenever the
# compiler sees AMX (-march=native on a Xeon with AMX_INT8), segfaults on the embedded Q4_1
# model at the first forward pass. The recipe is stored beside the binary: a binary built by
# another recipe is rebuilt.
NO_AMX=""
if echo 'int main(void){return 0;}' | ${CC:-cc} -x c -march=native -mno-amx-tile \
        -mno-amx-int8 -mno-amx-bf16 -o /dev/null - >/dev/null 2>&1; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
CMAKE_FLAGS=(-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
             -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release)
RECIPE="${CMAKE_FLAGS[*]} CFLAGS=$NO_AMX"
if [ -x "$BIN" ] && [ "$(cat "$CACHE/recipe" 2>/dev/null)" = "$RECIPE" ]; then
    echo "$BIN"
    exit 0
fi
for tool in cmake c++; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: building llama-server needs $tool; install it (e.g. apt-get install cmake g++)" >&2
        exit 1
    fi
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE"
LOG=$CACHE/build.log
echo "building llama-server from llama-cpp-python==$VERSION's vendored llama.cpp" \
     "(~10 minutes on 2 cores, once; log: $LOG) ..." >&2
build() {  # each step stops the build (set -e does not hold inside `if ! build`)
    local src="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
    "$PY" -m pip --disable-pip-version-check -q download --no-deps --no-binary :all: \
        -d "$WORK" "llama-cpp-python==$VERSION" || return
    tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK" || return
    CFLAGS="$NO_AMX" CXXFLAGS="$NO_AMX" \
        cmake -S "$src" -B "$WORK/build" "${CMAKE_FLAGS[@]}" || return
    cmake --build "$WORK/build" --target llama-server \
        -j "${LLAMA_SERVER_JOBS:-$(nproc 2>/dev/null || echo 2)}"
}
if ! build >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    echo "error: building llama-server failed; the whole log is in $LOG" >&2
    exit 1
fi
# Copy then rename, so an interrupted build never leaves a half-written binary at $BIN.
cp "$WORK/build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$RECIPE" >"$CACHE/recipe"
echo "$BIN"
