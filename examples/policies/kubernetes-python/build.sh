#!/usr/bin/env bash
# Builds the policy component: app.py + CPython -> kubernetes_python.wasm
# (or the path given as the first argument).
#
#   pip install -r requirements.txt   # componentize-py, once
#   ./build.sh                        # -> kubernetes_python.wasm
#
# The bindings for the `claim-policy` world are generated from ../../../wit/gantry-policy@0.1.0
# on every build, inside componentize-py: nothing generated is committed.
# (`componentize-py -d ../../../wit/gantry-policy@0.1.0 -w claim-policy bindings .` writes them
# out, for an editor's completion; they are .gitignored.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/kubernetes_python.wasm}")"
wit="$here/../../../wit/gantry-policy@0.1.0"
# Build from a copy: the CPython that componentize-py runs at build time
# (to snapshot the initialised interpreter) writes app.py's bytecode cache
# beside it, and that belongs in no source tree.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/app.py" "$work/"
cd "$work"
componentize-py --quiet --wit-path "$wit" --world claim-policy \
    componentize app --python-path . --output "$out"
