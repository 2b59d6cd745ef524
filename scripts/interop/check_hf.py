#!/usr/bin/env python3
"""Independent check of tern's Hugging Face interoperability with transformers.

Needs PyTorch and transformers, not Go: scripts/interop/prepare.sh builds a
static ternctl and the tern side's files into out/interop first.

1. tern -> HF: the model tern trained and exported (whole and sharded) loads
   with LlamaForCausalLM.from_pretrained; its logits on fixed inputs match the
   logits tern dumped, and greedy generation picks the tokens tern picked.
2. HF -> tern: random LlamaForCausalLMs (float32, bfloat16, tied embeddings,
   sharded by save_pretrained) are imported by ternctl, whose logits must
   match transformers'.
3. Tokenizer: AutoTokenizer on tern's exported GPT-2 files gives the ids
   tern's tokenizer gives.

Logits agree when max|a - b| / max|a| <= 1e-4 (float32 on the CPU; the two
implementations differ only in summation order). Prints one JSON object and
exits 1 if any check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

TOL = 1e-4


def rel_dev(ref, got):
    return ((ref.double() - got.double()).abs().max() / ref.double().abs().max()).item()


def load(d):
    m = LlamaForCausalLM.from_pretrained(d)
    return m.float().eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="out/interop", help="what prepare.sh wrote")
    ap.add_argument("--work", default=os.environ.get("OUT") or tempfile.mkdtemp())
    a = ap.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    d, work = a.dir, a.work
    os.makedirs(work, exist_ok=True)
    tc = os.path.join(d, "ternctl")
    os.chmod(tc, 0o755)
    res = {"torch": torch.__version__, "transformers": transformers.__version__, "tolerance": TOL, "checks": []}

    def record(name, ok, **kw):
        res["checks"].append(dict(name=name, ok=bool(ok), **kw))
        print(("PASS " if ok else "FAIL ") + name + " " + json.dumps(kw), file=sys.stderr, flush=True)

    def attempt(name, fn):
        try:
            fn()
        except Exception as e:  # one broken check must not hide the others
            record(name, False, error=f"{type(e).__name__}: {e}")

    # 1. tern-trained, tern-exported -> transformers.
    dumped = load_file(os.path.join(d, "tern-logits.safetensors"))
    toks, tern_logits = dumped["tokens"].long(), dumped["logits"]
    greedy = [json.loads(l) for l in open(os.path.join(d, "greedy.jsonl"))]

    def tern_to_hf(sub):
        t0 = time.time()
        m = load(os.path.join(d, sub))
        secs = time.time() - t0
        with torch.no_grad():
            hl = m(toks).logits
        dev = rel_dev(hl, tern_logits)
        record(f"tern->hf logits ({sub})", dev <= TOL and hl.shape == tern_logits.shape, rel_dev=dev,
               max_abs=(hl - tern_logits).abs().max().item(), max_logit=hl.abs().max().item(),
               shape=list(hl.shape), load_s=round(secs, 3))
        for g in greedy:
            ids = torch.tensor([g["promptTokens"]])
            with torch.no_grad():
                out = m.generate(ids, max_new_tokens=len(g["tokens"]), do_sample=False, pad_token_id=0)
            hf_new = out[0, ids.shape[1]:].tolist()
            record(f"greedy tokens ({sub}, prompt {g['prompt']!r})", hf_new == g["tokens"],
                   tern=g["text"], hf=bytes(hf_new).decode("utf-8", "replace"))

    for sub in ("trained-hf", "trained-hf-sharded"):
        attempt(f"tern->hf ({sub})", lambda sub=sub: tern_to_hf(sub))

    # 2. random transformers models -> tern.
    seqs = [[(7 * i + 3 * j) % 300 for j in range(40)] for i in range(3)]
    tokfile = os.path.join(work, "hf-tokens.json")
    json.dump(seqs, open(tokfile, "w"))
    hf_toks = torch.tensor(seqs)

    def hf_to_tern(name, tie, dtype, shard):
        kw = dict(vocab_size=300, hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, initializer_range=0.1,
                  tie_word_embeddings=tie)
        cfg = LlamaConfig(rope_theta=500000.0, **kw)
        torch.manual_seed(len(name))
        m = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():  # norms start at 1; make them matter
            for n, p in m.named_parameters():
                if "norm" in n:
                    p.copy_(1 + 0.2 * torch.randn_like(p))
        out = os.path.join(work, name)
        m.to(dtype).save_pretrained(out, safe_serialization=True, **({"max_shard_size": "200KB"} if shard else {}))
        ref = load(out)  # what transformers computes from the saved weights, in float32
        with torch.no_grad():
            hl = ref(hf_toks).logits
        dump = os.path.join(work, name + "-tern.safetensors")
        t0 = time.time()
        p = subprocess.run([tc, "eval", "hf:" + out, "--tokens", tokfile, "--dump-logits", dump], capture_output=True, text=True)
        secs = time.time() - t0
        if p.returncode != 0:
            record(f"hf->tern {name}", False, error=p.stderr.strip(), files=sorted(os.listdir(out)))
            return
        tl = load_file(dump)["logits"]
        dev = rel_dev(hl, tl)
        record(f"hf->tern {name}", dev <= TOL, rel_dev=dev, max_abs=(hl - tl).abs().max().item(),
               max_logit=hl.abs().max().item(), files=sorted(os.listdir(out)), ternctl_s=round(secs, 3))

    for name, tie, dtype, shard in [("random-f32", False, torch.float32, False), ("random-bf16", False, torch.bfloat16, False),
                                     ("random-tied", True, torch.float32, False), ("random-sharded", False, torch.float32, True)]:
        attempt(f"hf->tern {name}", lambda *x: hf_to_tern(name, tie, dtype, shard))

    # 3. GPT-2 tokenizer files.
    def tokenizer():
        tok = AutoTokenizer.from_pretrained(os.path.join(d, "gpt2-hf"))
        for l in open(os.path.join(d, "gpt2-ids.jsonl")):
            g = json.loads(l)
            hf_ids = tok.encode(g["prompt"])
            record(f"gpt2 tokenizer {g['prompt']!r}", hf_ids == g["promptTokens"], tern=g["promptTokens"], hf=hf_ids,
                   tokenizer=type(tok).__name__)

    attempt("gpt2 tokenizer", tokenizer)

    res["ok"] = all(c["ok"] for c in res["checks"])
    with open(os.path.join(work, "interop-results.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
