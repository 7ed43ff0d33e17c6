#!/usr/bin/env bash
# The one prepared GPU check (benchmarks/gpu_check.py says what it runs): usage
#   bash benchmarks/gpu_check.sh OUTDIR [--dry-run] [gpu_check.py options ...]
# On the lent GPU machine (no package registry) it first installs the carried wheels
# (.whl/, from `make gpu-wheels`; .whl-nnunet/ too if carried) into /tmp/site and runs rtseg
# from this source tree. --dry-run runs every step tiny on the CPU with the Python at hand
# ($PYTHON, default python3) and installs nothing. docs/PERFORMANCE.md "GPU check" has the
# exact device call.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: bash benchmarks/gpu_check.sh OUTDIR [--dry-run] [gpu_check.py options]" >&2
  exit 2
fi
OUTDIR=$1
shift
PY=${PYTHON:-python3}
DRY=0
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done
mkdir -p "$OUTDIR"
if [ "$DRY" = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
  wheels=(.whl/*.whl)
  compgen -G ".whl-nnunet/*.whl" >/dev/null && wheels+=(.whl-nnunet/*.whl)
  t0=$(date +%s)
  if ! timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "${wheels[@]}" >"$OUTDIR/check.log" 2>&1; then
    echo "gpu_check: installing the carried wheels failed (see $OUTDIR/check.log)" >&2
    exit 1
  fi
  echo "installed ${#wheels[@]} wheels into /tmp/site in $(( $(date +%s) - t0 )) s" | tee -a "$OUTDIR/check.log"
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" benchmarks/gpu_check.py "$OUTDIR" --python "$(command -v "$PY")" "$@"
