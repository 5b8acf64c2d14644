#!/usr/bin/env bash
# Create (or bring up to date) the bench-only virtualenv that holds the `fer` peer for bench/face_frame.py.
# `fer` is NEVER a dependency of emotion-edge: it lives only in this venv, outside the repository.
#
#   bash bench/fer_peer/setup.sh                       # -> $HOME/.cache/emotion-edge/bench-venv-fer
#   BENCH_FER_VENV=/some/dir bash bench/fer_peer/setup.sh
#
# Idempotent: re-running it on an existing venv only installs what differs from the pins below.
# fer's own metadata pulls in facenet-pytorch (torch), moviepy, ffmpeg-python, pandas, matplotlib and
# opencv-contrib-python; FER(mtcnn=False) imported as `fer.fer` needs none of them, hence --no-deps plus
# the handful of packages its import chain really uses (see README.md).
set -euo pipefail

VENV="${BENCH_FER_VENV:-$HOME/.cache/emotion-edge/bench-venv-fer}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi

pip=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)

# Versions verified on Python 3.11.7 (x86_64), see README.md. Transitive pins keep re-creations identical.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
cat >"$constraints" <<'EOF'
absl-py==2.5.1
astunparse==1.6.3
certifi==2026.10.18
charset-normalizer==3.5.2
flatbuffers==25.12.19
gast==0.7.0
google-pasta==0.2.0
grpcio==1.85.1
h5py==3.14.0
idna==3.20
keras==3.15.1
libclang==18.1.1
markdown-it-py==4.3.0
mdurl==0.1.2
ml_dtypes==0.6.0
namex==0.1.0
numpy==2.4.6
opt_einsum==3.4.0
optree==0.20.0
packaging==26.3
protobuf==7.36.2
Pygments==2.21.0
rich==15.0.0
six==1.17.0
termcolor==3.3.0
typing_extensions==4.16.0
urllib3==2.8.0
wheel==0.48.0
wrapt==2.5.2
EOF

"${pip[@]}" install --no-deps "fer==25.10.3"
# tensorflow-cpu: fer.fer imports tensorflow (tf.lite.Interpreter for its default quantized model) and
#   tensorflow.keras.models.load_model (Keras 3 satisfies it; tf-keras is not needed).
# opencv-python-headless<5: cv2 with cv2.data.haarcascades (OpenCV 5 dropped the Haar cascades).
# requests, pillow: imported at module level by fer.fer / fer.utils.
# setuptools<81: fer.fer imports pkg_resources, which setuptools 81 removed.
"${pip[@]}" install -c "$constraints" \
    "tensorflow-cpu==2.21.0" \
    "opencv-python-headless==4.14.0.94" \
    "requests==2.34.2" \
    "pillow==13.0.0" \
    "setuptools==80.9.0"

# Smoke test: the import chain the benchmark uses, and the model load.
OMP_NUM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -W ignore -c '
import numpy as np
import tensorflow as tf
from fer import __version__
from fer.fer import FER
FER(mtcnn=False).detect_emotions(np.zeros((48, 64, 3), np.uint8))
print(f"fer {__version__} (tensorflow {tf.__version__}) OK")
'
echo "bench venv ready: $VENV  (use: python bench/face_frame.py --fer-venv $VENV)"
