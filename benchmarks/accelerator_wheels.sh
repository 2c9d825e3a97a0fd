#!/usr/bin/env bash
# Downloads, here (where the package registries answer), the wheels that the lent GPU machines'
# image lacks (/work/.library/device/KINDS.md: it has JAX with CUDA, flax, optax, orbax, chex,
# matplotlib, tensorboard, but not these) into .wheels/ (gitignored; carry it to the device),
# for its Python 3.12 on x86-64 (PYTHON_VERSION=3.11 ... for another). benchmarks/accelerator.sh installs them there with --no-deps.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
rm -rf .wheels && mkdir .wheels
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" -d .wheels \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any \
  "tensorflow-datasets>=4.9.7" "grain>=0.2.6" array-record dm-tree "ml-collections>=1.0" "tensorboardX>=2.6" \
  "importlib_resources>=6.0" immutabledict simple-parsing docstring-parser termcolor toml tensorflow-metadata \
  googleapis-common-protos portpicker
"$PYTHON" -m pip wheel -q --no-deps -w .wheels promise  # published as a source archive only
du -sh .wheels
