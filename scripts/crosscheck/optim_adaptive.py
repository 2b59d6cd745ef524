#!/usr/bin/env python3
"""Cross-check tern's Adafactor, CAME, Adam-mini and both AdamW conventions
against float64 PyTorch, independently of tern's own Go tests.

Input: optim_adaptive.json written by
    go test ./pkg/optim/ -run TestWriteGoldenAdaptive -golden-adaptive-out DIR
holding, per case, the optimizer's hyperparameters, the initial weights, and
for five steps the learning rate, the gradients and tern's float32 weights
after the step.

References (all float64):
  - Adafactor: transformers.optimization.Adafactor itself (matrices and
    vectors in separate parameter groups, because tern decays matrices only);
  - AdamW "pytorch": torch.optim.AdamW (foreach=False);
  - AdamW "hf": transcription of transformers' AdamW.step (correct_bias=True)
    as copied into GaLore's galore_torch/adamw.py;
  - CAME: transcription of yangluo7/CAME came_pytorch/CAME.py, and the
    package itself when `came_pytorch` is installed;
  - Adam-mini: transcription of zyushun/Adam-mini's per-block step, blocks
    by role and the case's Partition: "v1.1" (releases 1.1.0-1.1.1; also
    when the field is absent) gives attn-qk head_dim rows, norm the whole
    tensor, every other role a row; "v1.0" (releases up to 1.0.4) gives the
    embedding and head one block per element (AdamW), attn-qk head_dim rows,
    every other role the whole tensor.
Output: the worst |tern − reference| per case; exit status 1 if any case
exceeds TOL (float32 rounding over five steps of size <= 2e-2 on weights of
magnitude <= 0.5 stays below 3e-7; a formula slip is >= 1e-5).

Usage: python3 optim_adaptive.py DIR/optim_adaptive.json
"""
import json
import math
import sys

import torch

TOL = 1e-6
F64 = torch.float64


def make_params(case):
    ps = []
    for p in case["params"]:
        t = torch.tensor(p["w0"], dtype=F64).reshape(p["shape"])
        ps.append(t.requires_grad_())
    return ps


def set_grads(ps, step):
    for p, g in zip(ps, step["grads"]):
        p.grad = torch.tensor(g, dtype=F64).reshape(p.shape)


def groups(ps, wd):
    """tern decays tensors of two or more axes only."""
    mats = [p for p in ps if p.dim() >= 2]
    vecs = [p for p in ps if p.dim() < 2]
    gs = []
    if mats:
        gs.append({"params": mats, "weight_decay": wd})
    if vecs:
        gs.append({"params": vecs, "weight_decay": 0.0})
    return gs


def run_torch_optimizer(case, ps, opt, set_lr=True):
    for step in case["steps"]:
        set_grads(ps, step)
        if set_lr:
            for g in opt.param_groups:
                g["lr"] = step["lr"]
        opt.step()
        yield [p.detach().clone() for p in ps]


def adafactor(case, ps):
    from transformers.optimization import Adafactor

    c = case["config"]
    rel = c["RelativeStep"]
    opt = Adafactor(
        groups(ps, c["WeightDecay"]),
        lr=None if rel else case["steps"][0]["lr"],
        eps=(c["Eps1"], c["Eps2"]),
        clip_threshold=c["ClipThreshold"],
        decay_rate=c["DecayRate"],
        beta1=c["Beta1"] if c["Beta1"] > 0 else None,
        weight_decay=0.0,
        scale_parameter=c["ScaleParameter"],
        relative_step=rel,
        warmup_init=c["WarmupInit"],
    )
    return run_torch_optimizer(case, ps, opt, set_lr=not rel)


def adamw(case, ps):
    c = case["config"]
    b1, b2, eps, wd = c["Beta1"], c["Beta2"], c["Eps"], c["WeightDecay"]
    if c["Convention"] in ("", "pytorch"):
        opt = torch.optim.AdamW(groups(ps, wd), lr=case["steps"][0]["lr"], betas=(b1, b2), eps=eps, foreach=False)
        yield from run_torch_optimizer(case, ps, opt)
        return
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    with torch.no_grad():
        for t, step in enumerate(case["steps"], 1):
            set_grads(ps, step)
            lr = step["lr"]
            size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            for i, p in enumerate(ps):
                g = p.grad
                m[i].mul_(b1).add_(g, alpha=1 - b1)
                v[i].mul_(b2).addcmul_(g, g, value=1 - b2)
                p.add_(m[i] / (v[i].sqrt() + eps), alpha=-size)
                if wd > 0 and p.dim() >= 2:
                    p.add_(p, alpha=-lr * wd)
            yield [p.detach().clone() for p in ps]


def approx_rsqrt(row, col):
    """HF/CAME _approx_sq_grad: rsqrt(R/mean(R)) ⊗ rsqrt(C)."""
    r = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
    return r * col.unsqueeze(-2).rsqrt()


def came_transcribed(case, ps):
    c = case["config"]
    b1, b2, b3 = c["Beta1"], c["Beta2"], c["Beta3"]
    e1, e2, d, wd = c["Eps1"], c["Eps2"], c["ClipThreshold"], c["WeightDecay"]
    st = [None] * len(ps)
    with torch.no_grad():
        for step in case["steps"]:
            set_grads(ps, step)
            lr = step["lr"]
            for i, p in enumerate(ps):
                g = p.grad
                fac = p.dim() >= 2
                if st[i] is None:
                    s = {"m": torch.zeros_like(p)}
                    if fac:
                        for k in ("r", "rr"):
                            s[k] = torch.zeros(p.shape[:-1], dtype=F64)
                        for k in ("c", "rc"):
                            s[k] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=F64)
                    else:
                        s["v"] = torch.zeros_like(p)
                    st[i] = s
                s = st[i]
                u = g * g + e1
                if fac:
                    s["r"].mul_(b2).add_(u.mean(dim=-1), alpha=1 - b2)
                    s["c"].mul_(b2).add_(u.mean(dim=-2), alpha=1 - b2)
                    u = approx_rsqrt(s["r"], s["c"]) * g
                else:
                    s["v"].mul_(b2).add_(u, alpha=1 - b2)
                    u = s["v"].rsqrt() * g
                u = u / max(1.0, (u.norm() / math.sqrt(u.numel())).item() / d)
                s["m"].mul_(b1).add_(u, alpha=1 - b1)
                if fac:
                    res = (u - s["m"]) ** 2 + e2
                    s["rr"].mul_(b3).add_(res.mean(dim=-1), alpha=1 - b3)
                    s["rc"].mul_(b3).add_(res.mean(dim=-2), alpha=1 - b3)
                    upd = approx_rsqrt(s["rr"], s["rc"]) * s["m"]
                    if wd:
                        p.add_(p, alpha=-wd * lr)
                else:
                    upd = s["m"].clone()
                p.add_(upd, alpha=-lr)
            yield [p.detach().clone() for p in ps]


def came_package(case, ps):
    from came_pytorch import CAME

    c = case["config"]
    opt = CAME(groups(ps, c["WeightDecay"]), lr=case["steps"][0]["lr"],
               eps=(c["Eps1"], c["Eps2"]), clip_threshold=c["ClipThreshold"],
               betas=(c["Beta1"], c["Beta2"], c["Beta3"]))
    return run_torch_optimizer(case, ps, opt)


def adam_mini_blocks(role, p, hd, partition):
    """Number of second-moment blocks of a parameter (each a run of rows)."""
    if partition not in ("", "v1.1", "v1.0"):
        raise SystemExit(f"unknown Adam-mini partition {partition!r}")
    v10 = partition == "v1.0"
    if role == "attn-qk":
        return p.shape[0] // hd
    if role in ("embedding", "head"):
        return p.numel() if v10 else p.shape[0]
    if role in ("attn-v", "attn-o", "mlp"):
        return 1 if v10 else p.shape[0]
    if role == "norm":
        return 1
    raise SystemExit(f"Adam-mini has no block rule for role {role!r}")


def adam_mini(case, ps):
    c = case["config"]
    b1, b2, eps, wd, hd = c["Beta1"], c["Beta2"], c["Eps"], c["WeightDecay"], c["HeadDim"]
    partition = c.get("Partition", "")
    blocks = [adam_mini_blocks(meta["role"], p, hd, partition) for meta, p in zip(case["params"], ps)]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros(n, dtype=F64) for n in blocks]
    with torch.no_grad():
        for t, step in enumerate(case["steps"], 1):
            set_grads(ps, step)
            lr = step["lr"]
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            for i, p in enumerate(ps):
                g = p.grad.reshape(blocks[i], -1)
                if p.dim() >= 2:
                    p.mul_(1 - lr * wd)
                m[i].mul_(b1).add_(p.grad, alpha=1 - b1)
                v[i].mul_(b2).add_((g * g).mean(dim=1), alpha=1 - b2)
                h = v[i].sqrt() / math.sqrt(bc2) + eps
                upd = (m[i].reshape(blocks[i], -1) / bc1) / h.unsqueeze(1)
                p.add_(upd.reshape(p.shape), alpha=-lr)
            yield [p.detach().clone() for p in ps]


def references(case):
    opt = case["optimizer"]
    if opt == "adafactor":
        yield "transformers.Adafactor", adafactor
    elif opt == "adamw":
        yield "adamw-" + (case["config"]["Convention"] or "pytorch"), adamw
    elif opt == "came":
        yield "CAME transcription", came_transcribed
        try:
            import came_pytorch  # noqa: F401

            yield "came_pytorch.CAME", came_package
        except ImportError:
            print("  (came_pytorch not installed: transcription only)")
    elif opt == "adam-mini":
        yield "Adam-mini " + (case["config"].get("Partition") or "v1.1") + " transcription", adam_mini
    else:
        raise SystemExit(f"unknown optimizer {opt!r} in case {case['name']}")


def main(path):
    with open(path) as f:
        cases = json.load(f)["cases"]
    ok = True
    for case in cases:
        for ref_name, ref in references(case):
            ps = make_params(case)
            worst = 0.0
            for step, want in zip(case["steps"], ref(case, ps)):
                for tern_w, ref_w in zip(step["w"], want):
                    tw = torch.tensor(tern_w, dtype=F64).reshape(ref_w.shape)
                    worst = max(worst, (tw - ref_w).abs().max().item())
            flag = "ok" if worst <= TOL else "FAIL"
            print(f"{case['name']:32s} vs {ref_name:28s} max |tern - ref| = {worst:.3e}  {flag}")
            ok &= worst <= TOL
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
