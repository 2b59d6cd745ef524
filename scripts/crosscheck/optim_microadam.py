#!/usr/bin/env python3
"""Cross-check tern's MicroAdam (pkg/optim/microadam.go) independently of tern's tests.

Input: optim_microadam.json written by
    go test ./pkg/optim -run TestWriteGoldenMicroAdam -golden-microadam-out DIR
holding, per case, the configuration, initial weights, per-step gradients and
learning rates, and what tern produced: the flat indices it kept each step and
the final weights.

Checks:
  1. A float64 transcription of MicroAdam (Modoranu et al. 2024, Algorithm 1
     with ADAM_STATS; reference code IST-DASLab/ISTA-DASLab-Optimizers
     micro_adam.py) keeps the same indices every step and ends within 5e-6 of
     tern's weights. The narrow formats are mimicked bit for bit, because they
     decide later selections: the accumulator a = g + Q^-1(e) is float32, kept
     values are bf16 (round to nearest even), and the error feedback is 4-bit
     codes over [lo, hi] with lo rounded down and hi rounded up to bf16 and the
     code arithmetic in float32 (tern's documented deviation from the CUDA
     kernel, which rounds lo/hi to nearest). Moments and weights are float64
     (Python floats are IEEE doubles, as torch.float64).
  2. For the Density = 1 case (gradients bf16-exact, t <= m), float64
     torch.optim.AdamW on the same gradients ends within 5e-6 of tern.
     Skipped, with a note, if torch is not installed.
Go writes float32 values in their shortest decimal form, so every float32 input
is rounded back to float32 (f32) before use. Exit status 1 if any check fails.
"""
import json
import math
import struct
import sys


def f32(x):
    """Round a double to float32 (nearest even), returned as a double."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def from_bits(u):
    return struct.unpack("<f", struct.pack("<I", u & 0xFFFFFFFF))[0]


def bf16_nearest(x):
    u = f32bits(x)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFFFFFF
    return from_bits(u & 0xFFFF0000)


def bf16_down(x):
    """Largest bf16 value <= x (x a float32 value)."""
    u = f32bits(x)
    t = u & 0xFFFF0000
    if t == u or x > 0:
        return from_bits(t)
    return from_bits(t + 0x10000)


def bf16_up(x):
    u = f32bits(x)
    t = u & 0xFFFF0000
    if t == u or x < 0:
        return from_bits(t)
    return from_bits(t + 0x10000)


def microadam(case):
    c = case["config"]
    m, dens = c["Window"], c["Density"]
    kblk, q = c["TopKBlockSize"], c["QuantBlockSize"]
    b1, b2, eps, wd = c["Beta1"], c["Beta2"], c["Eps"], c["WeightDecay"]
    ok = True
    worst = 0.0
    for p in case["params"]:
        d = len(p["w0"])
        w = [f32(x) for x in p["w0"]]
        tern_w = [f32(x) for x in p["w"]]
        nq = (d + q - 1) // q
        codes, lo, hi = [0] * d, [0.0] * nq, [0.0] * nq
        window = []  # list of steps, each a list of (index, bf16 value), oldest first
        for t, (g, lr) in enumerate(zip(p["grads"], case["lrs"]), start=1):
            g = [f32(x) for x in g]
            def deq(i):
                b = i // q
                u = f32((hi[b] - lo[b]) / 15)
                return f32(lo[b] + f32(codes[i] * u))
            a = [f32(g[i] + deq(i)) for i in range(d)]
            blk = min(d, kblk)
            kept, sel = [], [False] * d
            for start in range(0, d, blk):
                n = min(blk, d - start)
                k = math.ceil(n * dens)
                order = sorted(range(start, start + n), key=lambda i: (-abs(a[i]), i))
                for i in sorted(order[:k]):
                    kept.append((i, bf16_nearest(a[i])))
                    sel[i] = True
            got = p["kept"][t - 1]
            if sorted(i for i, _ in kept) != sorted(got):
                print(f"{case['name']} {p['name']} step {t}: kept {sorted(got)}, reference {sorted(i for i, _ in kept)}")
                ok = False
            window.append(kept)
            window = window[-m:]
            r = [0.0 if sel[i] else a[i] for i in range(d)]
            for b in range(nq):
                blkv = r[b * q:min((b + 1) * q, d)]
                lo[b], hi[b] = bf16_down(min(blkv)), bf16_up(max(blkv))
                u = f32((hi[b] - lo[b]) / 15)
                for i in range(b * q, min((b + 1) * q, d)):
                    code = 0 if u == 0 else math.floor(f32(f32(f32(r[i] - lo[b]) / u) + 0.5))
                    codes[i] = min(max(code, 0), 15)
            if p["matrix"]:
                w = [x * (1 - lr * wd) for x in w]
            mm, vv = [0.0] * d, [0.0] * d
            for s, entries in enumerate(window):
                age = len(window) - 1 - s
                for i, v in entries:
                    mm[i] += b1 ** age * v
                    vv[i] += b2 ** age * v * v
            c1 = (1 - b1) / (1 - b1 ** t)
            c2 = (1 - b2) / (1 - b2 ** t)
            w = [w[i] - lr * c1 * mm[i] / (math.sqrt(c2 * vv[i]) + eps) for i in range(d)]
        for i in range(d):
            e = abs(w[i] - tern_w[i])
            worst = max(worst, e)
            if e > 5e-6:
                print(f"{case['name']} {p['name']}[{i}]: tern {tern_w[i]}, reference {w[i]}")
                ok = False
    print(f"{case['name']}: float64 MicroAdam transcription, max |w_tern - w_ref| = {worst:.3g}")
    return ok


def adamw(case):
    try:
        import torch
    except ImportError:
        print(f"{case['name']}: torch not installed, AdamW comparison skipped")
        return True
    c = case["config"]
    ok = True
    worst = 0.0
    for p in case["params"]:
        w = torch.tensor([f32(x) for x in p["w0"]], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.AdamW([w], lr=1.0, betas=(c["Beta1"], c["Beta2"]), eps=c["Eps"],
                                weight_decay=c["WeightDecay"] if p["matrix"] else 0.0, foreach=False)
        for g, lr in zip(p["grads"], case["lrs"]):
            for grp in opt.param_groups:
                grp["lr"] = lr
            w.grad = torch.tensor([f32(x) for x in g], dtype=torch.float64)
            opt.step()
        e = (w.detach() - torch.tensor([f32(x) for x in p["w"]], dtype=torch.float64)).abs().max().item()
        worst = max(worst, e)
        if e > 5e-6:
            print(f"{case['name']} {p['name']}: max diff to torch AdamW {e:.3g}")
            ok = False
    print(f"{case['name']}: torch.optim.AdamW float64, max |w_tern - w_adamw| = {worst:.3g}")
    return ok


def main(path):
    with open(path) as f:
        cases = json.load(f)
    ok = True
    for case in cases:
        ok &= microadam(case)
        if case["config"]["Density"] == 1 and len(case["lrs"]) <= case["config"]["Window"]:
            ok &= adamw(case)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: optim_microadam.py DIR/optim_microadam.json")
    sys.exit(main(sys.argv[1]))
