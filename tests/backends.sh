#!/usr/bin/env bash
# The `backends`-marked tests under JAX and PyTorch, each from a virtual environment of its own
# that holds Keras, the backend and keras_compress but no TensorFlow (so nothing imports it):
#   bash tests/backends.sh setup   # creates .venv-jax and .venv-torch (about 1 minute)
#   bash tests/backends.sh test    # runs pytest -m backends in each (about 3 minutes)
# With them in place, the TensorFlow run's tests/test_backends.py also exports what they train.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A PACKAGES=([jax]="jax jaxlib" [torch]="torch==2.13.0")  # torch's CPU build, on disk here
case "${1:-test}" in
setup)
    for backend in jax torch; do
        python3 -m venv ".venv-$backend"
        ".venv-$backend/bin/python" -m pip install -q ${PACKAGES[$backend]} keras numpy scikit-learn zopfli pytest
        ".venv-$backend/bin/python" -m pip install -q --no-deps -e .
    done
    ;;
test)
    for backend in jax torch; do
        KERAS_BACKEND=$backend ".venv-$backend/bin/python" -m pytest -q -m backends tests
    done
    ;;
*)
    echo "usage: bash tests/backends.sh setup|test" >&2
    exit 2
    ;;
esac
