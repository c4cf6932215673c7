#!/bin/sh
# The python every DVC stage runs (dvc.yaml: `sh pipelines/python.sh pipelines/<stage>.py`), so that
# `dvc repro` works with the environment activated and as `.venv/bin/dvc repro` alike: DVC runs a
# stage's command with the caller's PATH and does not say which interpreter it runs on itself.
# First the python on PATH if it has patchunet installed, else this checkout's .venv/bin/python.
venv_python="$(dirname "$0")/../.venv/bin/python"
for candidate in python "$venv_python"; do
    if "$candidate" -c "import patchunet" >/dev/null 2>&1; then
        exec "$candidate" "$@"
    fi
done
echo "error: no python with patchunet installed on PATH or in .venv: run \`make setup\`, then \`source .venv/bin/activate\`" >&2
exit 1
