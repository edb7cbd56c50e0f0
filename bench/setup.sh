#!/usr/bin/env bash
# Creates bench/.venv with the pinned benchmark deps. Idempotent; run from anywhere.
#   bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
mkdir -p .cache results
# fp32 ONNX export of the model for onnx_server.py (skipped when bench/.cache/onnx/model.onnx exists)
if ! .venv/bin/python embeddings/export_onnx.py > .cache/export_onnx.log 2>&1; then
  tail -30 .cache/export_onnx.log >&2; echo "ONNX export failed (log: bench/.cache/export_onnx.log)" >&2; exit 1
fi
grep -E "^export_onnx" .cache/export_onnx.log
echo "bench/.venv ready: $(.venv/bin/python -c 'import torch, sentence_transformers, onnxruntime; print("torch", torch.__version__, "| sentence-transformers", sentence_transformers.__version__, "| onnxruntime", onnxruntime.__version__)')"
