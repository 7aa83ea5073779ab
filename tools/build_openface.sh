#!/usr/bin/env bash
# Build OpenFace 2.2 (FeatureExtraction, FaceLandmarkVidMulti) into a cache outside the clone and print the
# path of FeatureExtraction. OpenFace is academic, non-commercial research software that may not be
# redistributed: this script builds it from a source you got from its authors; the project never bundles it.
#
#   OPENFACE_SRC=/path/OpenFace-2.2.0.tar.xz tools/build_openface.sh   # a source tarball, or a source folder
#   tools/build_openface.sh                                            # clones the official repository (internet)
#
# OPENFACE_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/openface-bigfive/openface-2.2.0) holds src/, build/ and a
# stamp; a second run finds the stamp and prints the path at once. `--path` only prints it, or exits 3 when
# nothing is built (extract_features.py asks this way). OPENFACE_JOBS sets make's -j (default nproc).
# Debian packages are installed with apt-get when run as root; otherwise the one apt-get line is printed.
set -euo pipefail

CACHE="${OPENFACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openface-bigfive/openface-2.2.0}"
BIN="$CACHE/build/bin"
STAMP="$CACHE/.built"
REPOSITORY="https://github.com/TadasBaltrusaitis/OpenFace.git"
PACKAGES=(libopencv-dev libdlib-dev libopenblas-dev liblapack-dev libboost-filesystem-dev libboost-system-dev
          cmake g++ make)

say() { echo "build_openface: $*" >&2; }

if [[ -f "$STAMP" && -x "$BIN/FeatureExtraction" ]]; then
  echo "$BIN/FeatureExtraction"
  exit 0
fi
[[ "${1:-}" == "--path" ]] && exit 3

missing_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

if command -v dpkg-query >/dev/null; then
  read -r -a need <<<"$(missing_packages)"
  if (( ${#need[@]} )); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      say "installing ${need[*]}"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    else
      say "missing Debian packages; run: sudo apt-get install -y ${PACKAGES[*]}"
      exit 1
    fi
  fi
fi

mkdir -p "$CACHE"
SRC="$CACHE/src"
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
  rm -rf "$SRC" "$SRC.tmp"
  mkdir -p "$SRC.tmp"
  if [[ -n "${OPENFACE_SRC:-}" && -d "$OPENFACE_SRC" ]]; then
    cp -a "$OPENFACE_SRC/." "$SRC.tmp/"
  elif [[ -n "${OPENFACE_SRC:-}" && -f "$OPENFACE_SRC" ]]; then
    tar -xf "$OPENFACE_SRC" -C "$SRC.tmp"
  elif [[ -n "${OPENFACE_SRC:-}" ]]; then
    say "OPENFACE_SRC=$OPENFACE_SRC is neither a folder nor a file"
    exit 1
  else
    say "no OPENFACE_SRC: cloning $REPOSITORY (OpenFace_2.2.0) and downloading its models"
    git clone --depth 1 --branch OpenFace_2.2.0 "$REPOSITORY" "$SRC.tmp/OpenFace" >&2
    (cd "$SRC.tmp/OpenFace" && bash download_models.sh >&2)
  fi
  tree=$(find "$SRC.tmp" -maxdepth 4 -type d -path '*/exe/FeatureExtraction' -print -quit)
  top=$(dirname "$(dirname "${tree:-$SRC.tmp/none/exe}")")
  if [[ -z "$tree" || ! -f "$top/CMakeLists.txt" ]]; then
    say "no OpenFace source tree (CMakeLists.txt beside exe/FeatureExtraction) in ${OPENFACE_SRC:-the clone}"
    exit 1
  fi
  mv "$top" "$SRC"
  rm -rf "$SRC.tmp"
fi

mkdir -p "$CACHE/build"
say "building OpenFace in $CACHE/build (about 6-8 minutes on 2 cores)"
(cd "$CACHE/build" && cmake -D CMAKE_BUILD_TYPE=RELEASE "$SRC" >&2 &&
  make -j"${OPENFACE_JOBS:-$(nproc)}" FeatureExtraction FaceLandmarkVidMulti >&2)
# CMake looks for the Haar cascades in a folder that does not exist; they are needed for -fdloc only.
cp -r "$SRC/lib/3rdParty/OpenCV/classifiers" "$BIN/"
for program in FeatureExtraction FaceLandmarkVidMulti; do
  [[ -x "$BIN/$program" ]] || { say "the build did not produce $BIN/$program"; exit 1; }
done
# OpenFace prints no version; its README's title names it ("# OpenFace 2.2.0: ...").
sed -n '1s/^# *OpenFace \([0-9][0-9.]*\).*/\1/p' "$SRC/README.md" > "$BIN/openface_version.txt"
touch "$STAMP"
echo "$BIN/FeatureExtraction"
