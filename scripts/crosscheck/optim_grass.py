#!/usr/bin/env python3
"""Cross-check tern's GRASS (pkg/optim/grass.go, grass_select.go) with a float64 transcription.

Input: optim_grass.json written by
    go test ./pkg/optim -run TestWriteGoldenGrass -golden-grass-out DIR
holding, per case, the configuration, the initial weight (one m x n matrix),
per-step full gradients and learning rates, the rows (sigma) and scales (rho)
tern used at each step, and tern's weights after each step.

Usage: python3 scripts/crosscheck/optim_grass.py DIR/optim_grass.json

GRASS (Muhamed et al. 2024, arXiv 2406.17660) has no public reference code,
so this checks tern against the formulas of research/optimizers.md section 6
in plain Python float64 (no PyTorch needed; the matrices are tiny):
  selection - Top-r is recomputed from the float64 row norms of the gradient
              at each selection step (t mod K == 0), ties to the lower index,
              and must equal tern's rows. For the sampled methods tern's draws
              are injected (its splitmix64 stream is not replicated); the
              script checks that they are admissible (distinct rows without
              replacement, no zero-norm row drawn with replacement), constant
              within a window, and that rho follows the method: 1 for Top-r
              and norm without replacement, 1/sqrt(r*q_i) with
              q_i = |G_i|^p / sum_k |G_k|^p for norm with replacement,
              sqrt(m/r) for uniform (relative 1e-6).
  update    - C = rho * G[sigma, :]; moments and the bias counter reset at
              each selection; Hugging Face Adam core; W[sigma_j] -=
              lr*sqrt(1-b2^tau)/(1-b1^tau)*alpha*rho_j*N_j with repeats
              accumulating; then W -= lr*lambda*W. Weights must match tern's
              within 2e-6 (float32 rounding of weights of size ~1 over 8 steps).
Exit status 1 if any check fails.
"""
import json
import math
import sys


def check_case(c):
    cfg = c["config"]
    m, n = c["shape"]
    K, b1, b2, eps = cfg["UpdateProjGap"], cfg["Beta1"], cfg["Beta2"], cfg["Eps"]
    alpha, wd, method, repl = cfg["Scale"], cfg["WeightDecay"], cfg["Selection"], cfg["Replacement"]
    r = min(cfg["Rank"], m)
    w = list(c["w0"])
    errors = []
    sel, rho, mom, vel = None, None, None, None
    worst = 0.0
    for t, (g, lr, rows, scales, w_go) in enumerate(zip(c["grads"], c["lrs"], c["rows"], c["scales"], c["w"])):
        norms = [math.sqrt(sum(g[i * n + k] ** 2 for k in range(n))) for i in range(m)]
        if t % K == 0:
            if method == "topr":
                order = sorted(range(m), key=lambda i: (-norms[i], i))
                sel = sorted(order[:r])
                rho = [1.0] * r
                if sel != rows:
                    errors.append(f"step {t}: top-r rows {rows}, want {sel}")
            else:
                sel, rho = list(rows), list(scales)
                check_sample(method, repl, cfg["NormPower"], norms, sel, rho, m, r, t, errors)
            mom = [0.0] * (r * n)
            vel = [0.0] * (r * n)
        elif rows != sel:
            errors.append(f"step {t}: rows changed within a window: {rows} after {sel}")
        tau = t % K + 1
        size = lr * math.sqrt(1 - b2 ** tau) / (1 - b1 ** tau) * alpha
        for j, row in enumerate(sel):
            for k in range(n):
                x = rho[j] * g[row * n + k]
                mom[j * n + k] = b1 * mom[j * n + k] + (1 - b1) * x
                vel[j * n + k] = b2 * vel[j * n + k] + (1 - b2) * x * x
                w[row * n + k] -= size * rho[j] * mom[j * n + k] / (math.sqrt(vel[j * n + k]) + eps)
        w = [x - lr * wd * x for x in w]
        d = max(abs(a - b) for a, b in zip(w, w_go))
        worst = max(worst, d)
        if d > 2e-6:
            errors.append(f"step {t}: weights differ from tern's by {d:.3g}")
    return worst, errors


def check_sample(method, repl, p, norms, sel, rho, m, r, t, errors):
    if len(sel) != r or any(not (0 <= i < m) for i in sel):
        errors.append(f"step {t}: rows {sel} are not {r} rows of {m}")
        return
    if not repl and len(set(sel)) != r:
        errors.append(f"step {t}: repeated rows {sel} without replacement")
    weights = [x ** p for x in norms]
    total = sum(weights)
    for j, i in enumerate(sel):
        if method == "uniform":
            want = math.sqrt(m / r)
        elif repl:
            if weights[i] == 0:
                errors.append(f"step {t}: zero-norm row {i} drawn")
                continue
            want = 1 / math.sqrt(r * weights[i] / total)
        else:
            want = 1.0
        if abs(rho[j] - want) > 1e-6 * want:
            errors.append(f"step {t}: scale of row {i} is {rho[j]}, want {want}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    failed = False
    for c in cases:
        worst, errors = check_case(c)
        status = "ok" if not errors else "FAIL"
        print(f"{c['name']:12s} {status}  max |w - w_tern| = {worst:.3g}")
        for e in errors[:5]:
            print("   ", e)
        failed = failed or bool(errors)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
