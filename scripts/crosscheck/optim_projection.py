#!/usr/bin/env python3
"""Cross-check tern's GaLore and APOLLO (pkg/optim/galore.go, apollo.go) with float64 PyTorch.

Input: optim_projection.json written by
    go test ./pkg/optim -run TestWriteGoldenProjection -golden-projection-out DIR
holding, per case, the configuration, the initial weight (one m x n matrix),
per-step gradients and learning rates, the projection tern used at each step
and tern's weights after each step.

Usage: python3 scripts/crosscheck/optim_projection.py DIR/optim_projection.json

Checks, per step, in float64 torch:
  GaLore  - the update of jiaweizzhao/GaLore galore_torch/adamw.py (AdamW.step)
            with GaLoreProjector proj_type "std": the projection is recomputed
            with torch.linalg.svd whenever the step count before the update is
            a multiple of update_proj_gap, compared with tern's (after fixing
            each singular vector's sign to tern's, since an SVD is unique only
            up to sign) within 1e-5, then used to step; moments are carried
            across refreshes. Weights must match tern's within 2e-6.
  APOLLO  - the update of zhuhanqing/APOLLO apollo_torch/apollo.py (AdamW.step)
            with scale_type channel or tensor, scale_front, the norm-growth
            limiter (gamma 1.01) and the channel axis chosen by the reference's
            own shape rule (norm_dim = 0 if R.shape[0] < R.shape[1] else 1).
            tern's seeded Gaussian projection cannot come from torch's
            generator, so tern's projection is injected. Weights must match
            tern's within 2e-6 * sqrt(scale).
tern's projection layout is Q (r x d): Q = P when m >= n (P is r x n) and
Q = P^T when m < n (P is m x r). Exit status 1 if any check fails.
"""
import json
import math
import sys

import torch

F64 = torch.float64


def t(x, *shape):
    return torch.tensor(x, dtype=F64).reshape(*shape)


def hf_adam(state, r, b1, b2, eps):
    """Moments and normalised update of the Hugging Face AdamW both references copy."""
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(r)
        state["exp_avg_sq"] = torch.zeros_like(r)
    state["step"] += 1
    state["exp_avg"].mul_(b1).add_(r, alpha=1 - b1)
    state["exp_avg_sq"].mul_(b2).addcmul_(r, r, value=1 - b2)
    denom = state["exp_avg_sq"].sqrt().add_(eps)
    k = state["step"]
    step_size = math.sqrt(1 - b2 ** k) / (1 - b1 ** k)
    return state["exp_avg"] / denom, step_size


def galore_case(c):
    cfg = c["config"]
    m, n = c["shape"]
    rank, gap = cfg["Rank"], cfg["UpdateProjGap"]
    b1, b2, eps = cfg["Beta1"], cfg["Beta2"], cfg["Eps"]
    w = t(c["w0"], m, n)
    state = {"step": 0}
    p = None
    worst_w, worst_p = 0.0, 0.0
    for g, lr, q_go, w_go in zip(c["grads"], c["lrs"], c["proj"], c["w"]):
        g = t(g, m, n)
        right = m >= n
        if p is None or state["step"] % gap == 0:
            u, _, vh = torch.linalg.svd(g, full_matrices=False)
            rows = vh[:rank, :] if right else u[:, :rank].T  # tern's Q layout
            q = t(q_go, rows.shape[0], rows.shape[1])
            signs = torch.sign((rows * q).sum(dim=1, keepdim=True))
            signs[signs == 0] = 1
            rows = rows * signs
            worst_p = max(worst_p, (rows - q).abs().max().item())
            p = rows if right else rows.T
        low = g @ p.T if right else p.T @ g
        nrm, step_size = hf_adam(state, low, b1, b2, eps)
        back = (nrm @ p if right else p @ nrm) * cfg["Scale"]
        w = w - lr * step_size * back
        if cfg["WeightDecay"] > 0:
            w = w - lr * cfg["WeightDecay"] * w
        worst_w = max(worst_w, (w - t(w_go, m, n)).abs().max().item())
    ok = worst_w <= 2e-6 and worst_p <= 1e-5
    return ok, f"max |W - W_tern| {worst_w:.3g} (tol 2e-6), max |P - P_tern| {worst_p:.3g} (tol 1e-5)"


def apollo_case(c):
    cfg = c["config"]
    m, n = c["shape"]
    b1, b2, eps = cfg["Beta1"], cfg["Beta2"], cfg["Eps"]
    scale = cfg["Scale"]
    r = min(cfg["Rank"], m, n)
    w = t(c["w0"], m, n)
    state = {"step": 0}
    worst = 0.0
    for g, lr, q_go, w_go in zip(c["grads"], c["lrs"], c["proj"], c["w"]):
        g = t(g, m, n)
        right = m >= n
        q = t(q_go, r, n if right else m)
        p = q if right else q.T
        low = g @ p.T if right else p.T @ g
        nrm, step_size = hf_adam(state, low, b1, b2, eps)
        if cfg["ScaleType"] == "channel":
            norm_dim = 0 if nrm.shape[0] < nrm.shape[1] else 1
            factor = torch.norm(nrm, dim=norm_dim) / (torch.norm(low, dim=norm_dim) + 1e-8)
            if norm_dim == 1:
                factor = factor.unsqueeze(1)
        else:
            factor = torch.norm(nrm) / (torch.norm(low) + 1e-8)
        sg = g * factor
        if cfg["ScaleFront"]:
            sg = sg * math.sqrt(scale)
        if not cfg["DisableNL"]:
            if "scaling_grad" in state:
                sg_norm = torch.norm(sg)
                limiter = max(sg_norm / (state["scaling_grad"] + 1e-8), 1.01) / 1.01
                sg = sg / limiter
                state["scaling_grad"] = sg_norm / limiter
            else:
                state["scaling_grad"] = torch.norm(sg)
        if not cfg["ScaleFront"]:
            sg = sg * math.sqrt(scale)
        w = w - lr * step_size * sg
        if cfg["WeightDecay"] > 0:
            w = w - lr * cfg["WeightDecay"] * w
        worst = max(worst, (w - t(w_go, m, n)).abs().max().item())
    tol = 2e-6 * math.sqrt(scale)
    return worst <= tol, f"max |W - W_tern| {worst:.3g} (tol {tol:.3g})"


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: optim_projection.py DIR/optim_projection.json", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    failed = 0
    for c in cases:
        check = galore_case if c["optimizer"] == "galore" else apollo_case
        ok, msg = check(c)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {c['name']:12s} {c['shape'][0]}x{c['shape'][1]}: {msg}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
