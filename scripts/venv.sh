# Sourced by scripts/run and scripts/test: create or refresh .venv with idcode, every extra and
# the test and development tools, at the versions pinned in constraints.txt (reproducible).
# It is refreshed whenever pyproject.toml or constraints.txt changed since the last install.
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "idcode needs Python 3.11 or newer (set PYTHON=/path/to/python3.11 if it is elsewhere)" >&2
  exit 2
fi
stamp=.venv/.idcode-installed
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] \
   || ! cat pyproject.toml constraints.txt | cmp -s - "$stamp"; then
  echo "==> setting up .venv (first run only; needs the Python package index)"
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[service,terminal,qr,test,dev]'
  cat pyproject.toml constraints.txt > "$stamp"
fi
