#!/usr/bin/env bash
# Builds what scripts/interop/check_hf.py needs into out/interop (gitignored,
# small enough to carry to a machine without Go): a static ternctl, a model
# trained by tern and exported (whole and sharded), the logits and greedy
# continuations tern computes for fixed inputs, and a GPT-2-vocabulary export
# with the ids tern's tokenizer gives for sample texts.
#
#   scripts/interop/prepare.sh && python3 scripts/interop/check_hf.py
set -euo pipefail
cd "$(dirname "$0")/../.."
out=out/interop
rm -rf "$out" && mkdir -p "$out"
CGO_ENABLED=0 go build -ldflags "-s -w" -o "$out/ternctl" ./cmd/ternctl
tc="$out/ternctl"

"$tc" train -f scripts/interop/trained.yaml --checkpoint-dir "$out/ckpt" -q -o json > "$out/train.json"
"$tc" export "$out/ckpt" --out "$out/trained-hf" -o json > "$out/export.json"
"$tc" export "$out/ckpt" --out "$out/trained-hf-sharded" --max-shard-size 100KiB -o json > "$out/export-sharded.json"

# Fixed inputs: two sequences of 48 bytes.
python3 - "$out/tokens.json" <<'PY'
import json, sys
texts = ["func main() {\n\tfmt.Println(\"hello, world\")\n}\n// The quick brown", "Hugging Face and tern agree on every logit, 0123456789 !?"]
ids = [list(t.encode())[:48] for t in texts]
json.dump(ids, open(sys.argv[1], "w"))
PY
"$tc" eval "$out/ckpt" --tokens "$out/tokens.json" --dump-logits "$out/tern-logits.safetensors"
for p in "func " "The "; do
  "$tc" generate "$out/ckpt" --prompt "$p" --max-tokens 40 --temperature 0 -o json
done > "$out/greedy.jsonl"

"$tc" train -f scripts/interop/gpt2.yaml --checkpoint-dir "$out/gpt2-ckpt" -q -o json > /dev/null
"$tc" export "$out/gpt2-ckpt" --out "$out/gpt2-hf" -o json > /dev/null
rm -rf "$out/gpt2-ckpt"
for t in "Hello, world! It's 2026." "func (s *Stage) BlocksForward(a *Acts, x []float32) []float32 {" "  naïve café — 東京 🚀 'll've  \t tabs"; do
  "$tc" generate hf:"$out/gpt2-hf" --prompt "$t" --max-tokens 0 -o json
done > "$out/gpt2-ids.jsonl"
du -sh "$out"
