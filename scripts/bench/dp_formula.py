#!/usr/bin/env python3
"""Analytic payload bytes one worker sends per step at DP=4 for the
gpt2-shape preset (scripts/bench/dp.sh bytes), from the exchange's
definition:

  dense ring all-reduce: reduce-scatter + all-gather, each rank sends
      2*(W-1)/W of the gradient: 2*(W-1)/W * P * b   (b = 4 fp32, 2 bf16)
  DeMo: a ring all-gather of every rank's payload T: each rank forwards
      the W-1 others' and its own except the last hop, (W-1)*T; T is the
      compress wire format: 20 + 9*tensors header bytes, per 64x64 chunk
      (dimensions zero-padded to multiples of 64) k*(2+2) bytes (u16 index +
      bf16) or 2 + ceil(k/8) (bf16 scale + sign bits), 1-D tensors dense
      bfloat16 (2 bytes a value, in both value formats; wire version 2).
  GRASS between refreshes: the ring all-reduce of r selected rows of each
      2-D attention/MLP weight plus the dense embedding, head and norms.
"""
import math, sys

V, D, L, F, W = 50257, 768, 12, 2048, 4
mats = [(V, D), (V, D)]  # embedding, head
proj = []
for _ in range(L):
    proj += [(D, D)] * 4 + [(F, D), (F, D), (D, F)]
vecs = [D] * (2 * L + 1)
P = sum(r * c for r, c in mats + proj) + sum(vecs)


def ring(n, b):
    return 2 * (W - 1) / W * n * b


def demo(k, sign):
    tensors = mats + proj
    T = 20 + 9 * (len(tensors) + len(vecs))
    for r, c in tensors:
        chunks = math.ceil(r / 64) * math.ceil(c / 64)
        T += chunks * ((2 + math.ceil(k / 8)) + 2 * k if sign else 4 * k)
    T += 2 * sum(vecs)
    return (W - 1) * T


name = sys.argv[1]
if name == "dense fp32":
    v = ring(P, 4)
elif name == "dense bf16":
    v = ring(P, 2)
elif name.startswith("DeMo k=32"):
    v = demo(32, False)
elif name.startswith("DeMo k=8"):
    v = demo(8, True)
elif name.startswith("GRASS"):
    r = 128
    n = sum(min(r, rows) * cols for rows, cols in proj) + sum(a * b for a, b in mats) + sum(vecs)
    v = ring(n, 4)
else:
    sys.exit("unknown exchange " + name)
print(int(v))
