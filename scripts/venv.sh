# Sourced by scripts/run and scripts/test: create or refresh .venv with idcode and its tools.
# It is refreshed whenever pyproject.toml changed since the last install.
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "idcode needs Python 3.11 or newer (set PYTHON=/path/to/python3.11 if it is elsewhere)" >&2
  exit 2
fi
stamp=.venv/.idcode-installed
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  echo "==> setting up .venv (first run only; needs the Python package index)"
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  cp pyproject.toml "$stamp"
fi
