# Sourced by tools/test and tools/demo: make sure uv is there and the workspace is installed.
# Works on a fresh machine that has only Python 3.11+ and pip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1; then
    PATH="$HOME/.local/bin:$PATH"
    if ! command -v uv >/dev/null 2>&1; then
        echo "uv not found: installing it with pip (python3 -m pip install --user uv)" >&2
        python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
        PATH="$(python3 -c 'import site; print(site.USER_BASE)')/bin:$PATH"
    fi
fi
export PATH
cd "$ROOT"
uv sync --frozen --all-packages --all-extras --quiet --python "${DES_PYTHON:-python3}"
