#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ for every fuzz target, from the repository's
# own test data and docs plus the small hand-written seeds in fuzz/seeds/.
# Idempotent: files are named by content, so re-running adds nothing new and
# never removes what the fuzzer has found. fuzz/corpus is not committed.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
corpus=$fuzz/corpus
targets=(eraser_config units exclusions_json image_reference pattern_native_vs_wasm trivy_report snapshot_yaml golden_case_yaml)

# add TARGET FILE...: copies each file into the target's corpus, named by its hash.
add() {
    local target=$1 f sum
    shift
    mkdir -p "$corpus/$target"
    for f in "$@"; do
        [[ -f $f ]] || continue
        sum=$(sha1sum "$f" | cut -c1-40)
        [[ -e $corpus/$target/seed-$sum ]] || cp "$f" "$corpus/$target/seed-$sum"
    done
}

for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t"
    if [[ -d $fuzz/seeds/$t ]]; then
        add "$t" "$fuzz/seeds/$t"/*
    fi
done
# Reference and pattern lines serve both matching targets.
add pattern_native_vs_wasm "$fuzz/seeds/image_reference"/*

shopt -s nullglob
add eraser_config "$root"/tests/data/controller/eraser-manager-config.yaml
add snapshot_yaml "$root"/tests/data/snapshots/*.yaml "$root"/tests/data/snapshots/*.json
add golden_case_yaml "$root"/policies/default/tests/*.yaml "$root"/guest-examples/*/tests/*.yaml
add exclusions_json "$root"/tests/data/*/*.json

# Fenced yaml/json blocks of the docs, routed by what they hold, and the
# inline `{"excluded": [...]}` documents of the tests.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" "$root"/README.md "$root"/docs/*.md <<'PY'
import os, re, sys
out = sys.argv[1]
n = 0
for path in sys.argv[2:]:
    text = open(path, encoding="utf-8").read()
    for m in re.finditer(r"^```(yaml|json|jsonc)[^\n]*\n(.*?)^```", text, re.S | re.M):
        body = m.group(2)
        if "EraserConfig" in body:
            target = "eraser_config"
        elif '"excluded"' in body:
            target = "exclusions_json"
        elif "expect" in body:
            target = "golden_case_yaml"
        elif "context" in body:
            target = "snapshot_yaml"
        elif "SchemaVersion" in body:
            target = "trivy_report"
        else:
            continue
        os.makedirs(os.path.join(out, target), exist_ok=True)
        n += 1
        with open(os.path.join(out, target, f"doc-{n}"), "w", encoding="utf-8") as f:
            f.write(body)
PY
grep -rhoE '\{"excluded": ?\[[^]]*\]\}' "$root"/tests/*.rs "$root"/tests/support/src "$root"/host/src 2>/dev/null \
    | sort -u | split -l 1 - "$tmp/excluded-" || true
add exclusions_json "$tmp"/excluded-*
for t in "${targets[@]}"; do
    add "$t" "$tmp/$t"/*
done

for t in "${targets[@]}"; do
    printf '%-24s %5d inputs\n' "$t" "$(find "$corpus/$t" -type f | wc -l)"
done
