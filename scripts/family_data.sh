#!/usr/bin/env bash
# The files a family's recipe reads from the data root, put there by `make run FAMILY=...` when they are missing.
# fashion: Fashion-MNIST's four IDX files from Debian's dataset-fashion-mnist package (31 MB, installed with apt when
# missing), copied into <data root>/fashion-mnist (the data root: $COMPRESSION_PIPELINE_DATA, default data/).
# Other families (digits ships inside scikit-learn) need nothing. Idempotent.
set -euo pipefail

family=${1:?usage: scripts/family_data.sh FAMILY}
data=${COMPRESSION_PIPELINE_DATA:-data}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }

case "$family" in
  fashion)
    src=/usr/share/datasets/fashion-mnist
    dst=$data/fashion-mnist
    files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
    missing=0
    for f in $files; do [ -f "$dst/$f" ] || missing=1; done
    [ $missing -eq 1 ] || exit 0
    if [ ! -f "$src/t10k-labels-idx1-ubyte.gz" ]; then
      if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; then
        echo "installing Debian's dataset-fashion-mnist (Fashion-MNIST's IDX files, 31 MB)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
      else
        echo "scripts/family_data.sh: Fashion-MNIST is missing and cannot be installed here (needs apt-get as root)." >&2
        echo "  On Debian/Ubuntu, as root: apt-get install dataset-fashion-mnist" >&2
        echo "  Elsewhere: put the four files ($files) of the Fashion-MNIST project into $dst/" >&2
        exit 1
      fi
    fi
    mkdir -p "$dst"
    for f in $files; do cp "$src/$f" "$dst/$f"; done
    echo "Fashion-MNIST: copied $src/*.gz to $dst/"
    ;;
esac
