#!/usr/bin/env bash
# gridq_model_test.sh — gridq-model from the command line (ctest: tool_gridq_model). GQ_BIN is
# the folder of the built programs.
set -euo pipefail
bin=${GQ_BIN:?GQ_BIN must name the folder of the built programs}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail () { echo "FAIL: $*" >&2; exit 1; }

"$bin/gridq-model" --help | grep -q "gridq-model make" || fail "--help"
if "$bin/gridq-model" make --layers 4 --seed 1 --out "$dir/x.safetensors" 2>/dev/null; then
    fail "one width accepted"
fi
if "$bin/gridq-model" make --layers 4,x --seed 1 --out "$dir/x.safetensors" 2>/dev/null; then
    fail "bad width accepted"
fi

for dtype in f32 f16 bf16; do
    "$bin/gridq-model" make --layers 6,16,3 --seed 7 --dtype $dtype --out "$dir/m-$dtype.safetensors" \
        | grep -q "2 layers, 163 parameters" || fail "make $dtype"
    info=$("$bin/gridq-model" info "$dir/m-$dtype.safetensors")
    grep -q "mlp: 6 -> 16 -> 3 (2 layers, 163 parameters" <<<"$info" || fail "info $dtype: $info"
    grep -q "layers.0.weight" <<<"$info" || fail "info lists tensors"
    out=$("$bin/gridq-model" run "$dir/m-$dtype.safetensors" --input '[[1,2,3,4,5,6],[0,0,0,0,0,0]]')
    grep -q '"argmax": *\[[0-2], *[0-2]\]' <<<"$out" || grep -q '"argmax":\[[0-2],[0-2]\]' <<<"$out" \
        || fail "run $dtype: $out"
done
# The same seed makes the same file; another seed another.
"$bin/gridq-model" make --layers 6,16,3 --seed 7 --out "$dir/again.safetensors" >/dev/null
cmp -s "$dir/m-f32.safetensors" "$dir/again.safetensors" || fail "not deterministic"
"$bin/gridq-model" make --layers 6,16,3 --seed 8 --out "$dir/other.safetensors" >/dev/null
if cmp -s "$dir/m-f32.safetensors" "$dir/other.safetensors"; then fail "seed ignored"; fi

# A payload object, stdin, softmax.
echo '{"input": [[1,1,1,1,1,1]]}' | "$bin/gridq-model" run "$dir/m-f32.safetensors" --input - --softmax \
    | grep -q '"output"' || fail "stdin payload"
# Wrong width, a lying file, a missing file: errors, exit 1.
if "$bin/gridq-model" run "$dir/m-f32.safetensors" --input '[[1,2]]' 2>"$dir/err"; then fail "width"; fi
grep -q "takes 6" "$dir/err" || fail "width message: $(cat "$dir/err")"
printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a":1}' >"$dir/liar.safetensors"
if "$bin/gridq-model" info "$dir/liar.safetensors" 2>"$dir/err"; then fail "liar accepted"; fi
grep -q "header length 16 runs past the end" "$dir/err" || fail "liar message: $(cat "$dir/err")"
if "$bin/gridq-model" info "$dir/none.safetensors" 2>/dev/null; then fail "missing file"; fi
echo "tool_gridq_model: OK"
