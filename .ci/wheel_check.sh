#!/usr/bin/env bash
# Release checks: build the sdist and the wheel, check their metadata and contents, then install
# the wheel alone (no extras) into a fresh venv and use it as a new user would.
# Needs `build`, `twine` and `check-wheel-contents` (the `dev` extra) on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -m build --outdir "$work/dist" .
twine check --strict "$work"/dist/*
check-wheel-contents "$work"/dist/*.whl
wheel=$(ls "$work"/dist/*.whl)
version=$(basename "$wheel" | cut -d- -f2)
echo "built $(basename "$wheel") and $(basename "$work"/dist/*.tar.gz)"

python - "$wheel" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "matryoshka_retrieval/py.typed" in names, "py.typed is missing from the wheel"
assert "matryoshka_retrieval/cli/__init__.py" in names, "the CLI package is missing"
stray = [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "docs", "examples")]
assert not stray, f"files outside the package in the wheel: {stray}"
PY

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"
cd "$work"  # away from the source tree: only the installed wheel can be imported

"$work/venv/bin/python" - "$version" <<'PY'
import importlib.metadata
import sys

import matryoshka_retrieval

assert matryoshka_retrieval.__version__ == sys.argv[1], matryoshka_retrieval.__version__
assert importlib.metadata.version("matryoshka-retrieval") == sys.argv[1]
assert matryoshka_retrieval.__file__.startswith(sys.prefix), matryoshka_retrieval.__file__
try:
    import matryoshka_retrieval.langchain  # noqa: F401
except ImportError as exc:
    assert 'pip install "matryoshka-retrieval[langchain]"' in str(exc), exc
    print(f"import matryoshka_retrieval.langchain without the extra: {exc}")
else:
    raise SystemExit("matryoshka_retrieval.langchain imported without langchain-core installed")
PY

"$work/venv/bin/matryoshka" --help >"$work/help.txt"
for command in demo eval plan index search tune copy fit-projection train; do
    grep -q "$command" "$work/help.txt" || { echo "matryoshka --help lists no $command"; exit 1; }
done
test "$("$work/venv/bin/matryoshka" --version)" = "matryoshka $version"
echo "wheel checks passed: matryoshka-retrieval $version installs and runs with no extras"
