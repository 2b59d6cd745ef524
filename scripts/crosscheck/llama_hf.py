#!/usr/bin/env python3
"""Cross-check tern's LLaMA forward/backward and AdamW against Hugging Face
transformers and PyTorch, independently of tern's own tests.

Input: a safetensors file written by `go run ./scripts/crosscheck/dump` holding
  - the model weights under their Hugging Face names,
  - "input_ids" and "targets" (int32, [B, T]; target -1 = ignored),
  - "tern.loss_sum" (float64 scalar as [1]), "tern.grad.<name>" (float32),
  - "tern.adamw.<name>": the weights after one tern AdamW step on those grads,
  - metadata: the model config and AdamW hyperparameters as JSON.
Output: max relative errors, and exit status 1 if any exceeds its tolerance.
"""
import json
import sys

import torch
from safetensors.torch import load_file
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM


def main(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    opt = json.loads(meta["adamw"])
    ts = load_file(path)
    hf = LlamaConfig(
        vocab_size=cfg["vocab"], hidden_size=cfg["dim"], intermediate_size=cfg["ffn"],
        num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
        num_key_value_heads=cfg["kvHeads"], max_position_embeddings=cfg["seqLen"],
        rms_norm_eps=cfg["normEps"], rope_theta=cfg["ropeTheta"], tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, hidden_act="silu", attn_implementation="eager",
    )
    ok = True
    for dtype, tol_loss, tol_grad in ((torch.float64, 1e-5, 1e-3), (torch.float32, 1e-5, 1e-3)):
        model = LlamaForCausalLM(hf).to(dtype)
        names = [n for n, _ in model.named_parameters()]
        sd = {n: ts[n].to(dtype) for n in names}
        missing = model.load_state_dict(sd, strict=True)
        ids = ts["input_ids"].long()
        tgt = ts["targets"].long()
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-1, reduction="sum")
        loss.backward()
        tern_loss = float(ts["tern.loss_sum"][0])
        rel = abs(loss.item() - tern_loss) / abs(loss.item())
        print(f"[{dtype}] loss_sum hf={loss.item():.8f} tern={tern_loss:.8f} rel={rel:.2e}")
        ok &= rel <= tol_loss
        worst = 0.0
        for n, p in model.named_parameters():
            g = p.grad.double()
            tg = ts["tern.grad." + n].double()
            err = (g - tg).abs().max().item() / max(g.abs().max().item(), 1e-30)
            worst = max(worst, err)
            if err > tol_grad:
                print(f"  grad {n}: max rel err {err:.2e} > {tol_grad}")
                ok = False
        print(f"[{dtype}] worst gradient max-abs error relative to the tensor's max: {worst:.2e}")
        if dtype == torch.float32:
            # One torch AdamW step on tern's own gradients (so only the optimizer
            # arithmetic differs), decay on matrices only.
            for n, p in model.named_parameters():
                p.grad = ts["tern.grad." + n].to(torch.float32).clone()
            decay = [p for p in model.parameters() if p.ndim >= 2]
            no_decay = [p for p in model.parameters() if p.ndim < 2]
            o = torch.optim.AdamW(
                [{"params": decay, "weight_decay": opt["weightDecay"]},
                 {"params": no_decay, "weight_decay": 0.0}],
                lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"], foreach=False)
            o.step()
            worst = 0.0
            for n, p in model.named_parameters():
                moved = (p.detach().double() - ts[n].double()).abs().max().item()
                err = (p.detach().double() - ts["tern.adamw." + n].double()).abs().max().item()
                worst = max(worst, err / max(moved, 1e-30))
            print(f"[adamw] worst |torch - tern| relative to the step size: {worst:.2e}")
            # Same inputs, float32 arithmetic in a different order: a few ulps of
            # the update.
            ok &= worst <= 1e-3
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
