# Sourced by tools/test and tools/demo: make sure uv is there and the workspace is installed.
# Works on a fresh machine that has only Python 3.11+ and pip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export UV_PYTHON_DOWNLOADS=never

# The uv package installed for python3 (pip install --user uv) with its scripts directory not
# on PATH: put the directory of its binary on PATH, or else run it as `python3 -m uv`.
_des_find_uv() {
    local bin
    bin="$(python3 -c 'from uv import find_uv_bin; print(find_uv_bin())' 2>/dev/null)" || bin=""
    if [ -n "$bin" ] && [ -x "$bin" ]; then
        PATH="$(dirname "$bin"):$PATH"
    elif python3 -m uv --version >/dev/null 2>&1; then
        uv() { python3 -m uv "$@"; }
    else
        return 1
    fi
}

if ! command -v uv >/dev/null 2>&1; then
    PATH="$HOME/.local/bin:$PATH"
    if ! command -v uv >/dev/null 2>&1 && ! _des_find_uv; then
        echo "uv not found: installing it with pip (python3 -m pip install --user uv)" >&2
        python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
        PATH="$(python3 -c 'import site; print(site.USER_BASE)')/bin:$PATH"
        command -v uv >/dev/null 2>&1 || _des_find_uv || {
            echo "uv was installed but cannot be found; add its directory to PATH" >&2
            exit 127
        }
    fi
fi
export PATH
cd "$ROOT"
uv sync --frozen --all-packages --all-extras --quiet --python "${DES_PYTHON:-python3}"
