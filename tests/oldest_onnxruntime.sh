#!/usr/bin/env bash
# Run the ONNX Runtime-facing tests against the oldest onnxruntime setup.cfg allows (or VERSION),
# in a throwaway venv under /tmp that borrows everything else from .venv (run `make install` first).
#   bash tests/oldest_onnxruntime.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-$(sed -n 's/^ *onnxruntime>=\([0-9.]*\)$/\1/p' setup.cfg)}"
venv="$(mktemp -d /tmp/edgeseg-ort-"$version"-XXXX)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "onnxruntime==$version"
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$site')" >"$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz-edgeseg.pth"
"$venv/bin/python" -c "import onnxruntime, onnx; print('onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_quant.py tests/test_bench.py tests/test_export.py \
    tests/test_report.py tests/test_deploy_side.py
