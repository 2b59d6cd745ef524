"""PyTorch eager baseline for tern's CUDA benchmark.

Trains a Hugging Face LlamaForCausalLM of the same shape as a tern preset
(untied embeddings, RMSNorm, RoPE, SwiGLU, no biases) with fused AdamW on
uniform random tokens, and prints one line per setting in the format of
scripts/gpu/bench: the median step time (forward, backward, optimizer step,
each ending in torch.cuda.synchronize) and tokens/s.

    python3 torch_baseline.py --b 4 --t 64 --precision tf32
"""
import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PRESETS = {
    "gpt2-shape": dict(vocab_size=50257, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       num_key_value_heads=12, intermediate_size=2048, max_position_embeddings=1024),
    "small": dict(vocab_size=256, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=8, intermediate_size=688, max_position_embeddings=256),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpt2-shape")
    ap.add_argument("--b", type=int, default=4)
    ap.add_argument("--t", type=int, default=64)
    ap.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    tf32 = args.precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    cfg = LlamaConfig(**PRESETS[args.preset], rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                      attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    g = torch.Generator(device="cuda").manual_seed(1)
    times = []
    for s in range(args.warmup + args.steps):
        x = torch.randint(0, cfg.vocab_size, (args.b, args.t), device="cuda", generator=g)
        y = torch.randint(0, cfg.vocab_size, (args.b, args.t), device="cuda", generator=g)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, cfg.vocab_size), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if s >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch gpu={torch.cuda.get_device_name()!r} torch={torch.__version__} preset={args.preset} params={n_params} "
          f"B={args.b} T={args.t} precision={args.precision} attn={cfg._attn_implementation} "
          f"step_ms_median={med*1e3:.2f} step_ms_min={min(times)*1e3:.2f} tokens_per_s={args.b*args.t/med:.0f} "
          f"loss={loss.item():.4f} peak_mib={torch.cuda.max_memory_allocated()/2**20:.0f} "
          f"peak_bytes_per_param={torch.cuda.max_memory_allocated()/n_params:.1f}", flush=True)


if __name__ == "__main__":
    main()
