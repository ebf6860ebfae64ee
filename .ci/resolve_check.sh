#!/usr/bin/env bash
# Do the extras install on the Pythons we cannot run here? pip's resolver, binary wheels only,
# against the registry, for Python 3.13 and 3.14: the README's test command (torch==2.13.0 and
# dev, onnx, serve, gislr, hub), and extract alone. Nothing is installed (--dry-run).
# Usage: .ci/resolve_check.sh [python versions...]   (default: 3.13 3.14)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.13 3.14)
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
status=0
for py in "${versions[@]}"; do
  for spec in "torch==2.13.0 .[dev,onnx,serve,gislr,hub]" ".[extract]"; do
    # shellcheck disable=SC2086  # the spec is two requirements, split on purpose
    if out=$("$PIP" install --dry-run --ignore-installed --quiet --report - --only-binary=:all: \
        --python-version "$py" --target "$target" $spec 2>&1); then
      mediapipe=$(printf '%s' "$out" | python3 -c 'import json,sys
text = sys.stdin.read(); report = json.loads(text[text.index("{"):])
print(next((i["metadata"]["version"] for i in report["install"] if i["metadata"]["name"] == "mediapipe"), "-"))')
      echo "ok: Python $py resolves $spec (mediapipe $mediapipe)"
    else
      echo "FAIL: Python $py cannot resolve $spec:"
      printf '%s\n' "$out" | grep -v '^WARNING: Location' | tail -5
      status=1
    fi
  done
done
exit $status
