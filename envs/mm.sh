#!/usr/bin/env bash
# The optional OpenMMLab stack (mmpose, mmsegmentation, mmdet) into a virtualenv: `make mm`.
#
# mmcv has no prebuilt wheel for torch 2.14, so mmcv 2.1.0 is built from source with its
# compiled ops (mmcv-lite lacks mmcv._ext): about 7 minutes on 2 cores. The built wheel is
# kept outside the clone, in $COCON_MM_CACHE (default ~/.cache/cocon-mm), in a folder named
# by the mmcv, torch and Python versions, so later installs on the same machine skip the
# build. xtcocotools is rebuilt for numpy 2 and cached the same way.
#
# usage: envs/mm.sh [VENV]   (default .venv)
set -euo pipefail

MMCV=2.1.0
XTCOCOTOOLS=1.14.3
VENV=$(cd "${1:-.venv}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
B=$VENV/bin
CACHE_ROOT=${COCON_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cocon-mm}

VERSIONS=$("$B/python" -c '
import sys, numpy, torch
print(f"cp{sys.version_info.major}{sys.version_info.minor}", torch.__version__, numpy.__version__.split(".")[0])')
read -r PYTHON_TAG TORCH NUMPY_MAJOR <<< "$VERSIONS"
MMCV_CACHE=$CACHE_ROOT/mmcv-$MMCV-torch$TORCH-$PYTHON_TAG
XTCOCOTOOLS_CACHE=$CACHE_ROOT/xtcocotools-$XTCOCOTOOLS-numpy$NUMPY_MAJOR-$PYTHON_TAG

# the build tools; setuptools < 81 still has pkg_resources, which mmcv's setup.py imports
"$B/pip" install --quiet mmengine==0.10.7 "setuptools<81" wheel ninja cython

# the newest wheel in folder $1 matching $2, or nothing
cached_wheel() { ls -t "$1"/$2 2>/dev/null | head -n 1; }

# build_wheel NAME FOLDER COMMAND...: run COMMAND in a scratch folder, where it leaves one
# wheel in ./wheel, and move that wheel into FOLDER (renamed in place, so an interrupted
# build never leaves a partial wheel in the cache)
build_wheel() {
    local name=$1 folder=$2; shift 2
    local scratch; scratch=$(mktemp -d)
    echo "building $name (once; kept in $folder)"
    (cd "$scratch" && "$@")
    mkdir -p "$folder"
    local wheel; wheel=$(ls "$scratch"/wheel/*.whl)
    cp "$wheel" "$folder/.partial" && mv "$folder/.partial" "$folder/$(basename "$wheel")"
    rm -rf "$scratch"
}

mmcv_from_source() {
    # without build isolation: pip prepares the metadata with setup.py, which needs torch and pkg_resources
    "$B/pip" download --quiet --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV" -d .
    tar xzf "mmcv-$MMCV.tar.gz"
    # torch 2.14's headers need C++20; mmcv's setup.py asks for C++17
    sed -i 's/-std=c++17/-std=c++20/' "mmcv-$MMCV/setup.py"
    # -g0: Python's build flags ask for debug information, which for torch's headers is
    # 2.3 MB an object and a third of the compile time; envs/mmcv_cxx.sh precompiles the
    # header that pulls torch's headers into almost every source
    (cd "mmcv-$MMCV" && MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) CFLAGS="${CFLAGS:-} -g0" CXX="$HERE/mmcv_cxx.sh" \
        MMCV_PCH_HEADER="$PWD/mmcv/ops/csrc/common/pytorch_cpp_helper.hpp" \
        "$B/pip" wheel --quiet --no-build-isolation --no-deps . -w ../wheel)
}

xtcocotools_for_numpy() {
    # the PyPI wheels are built against numpy 1
    "$B/pip" wheel --quiet --no-deps --no-build-isolation --no-binary xtcocotools \
        "xtcocotools==$XTCOCOTOOLS" -w wheel
}

[ -n "$(cached_wheel "$MMCV_CACHE" "mmcv-$MMCV-*.whl")" ] || build_wheel mmcv "$MMCV_CACHE" mmcv_from_source
[ -n "$(cached_wheel "$XTCOCOTOOLS_CACHE" "xtcocotools-*.whl")" ] ||
    build_wheel xtcocotools "$XTCOCOTOOLS_CACHE" xtcocotools_for_numpy
echo "mmcv from $(cached_wheel "$MMCV_CACHE" "mmcv-$MMCV-*.whl")"
"$B/pip" install --quiet --no-deps "$(cached_wheel "$MMCV_CACHE" "mmcv-$MMCV-*.whl")"
"$B/pip" install --quiet --force-reinstall --no-deps "$(cached_wheel "$XTCOCOTOOLS_CACHE" "xtcocotools-*.whl")"

# the packages without their pins (chumpy, which mmpose asks for, does not build), then
# what they import
"$B/pip" install --quiet --no-deps mmpose==1.3.2 mmsegmentation==1.2.2 mmdet==3.3.0
"$B/pip" install --quiet json-tricks munkres prettytable ftfy regex six pycocotools shapely terminaltables
# mmengine pulls in opencv-python, whose cv2 would shadow the contrib build cocon uses
OPENCV=$("$B/python" -c 'import importlib.metadata as m; print(m.version("opencv-contrib-python"))')
"$B/pip" uninstall --quiet --yes opencv-python
"$B/pip" install --quiet --force-reinstall --no-deps "opencv-contrib-python==$OPENCV"

"$B/python" -c 'import mmcv.ops, mmpose.apis, mmseg.apis, mmdet.apis; print("mm stack ok: mmcv", mmcv.__version__)'
