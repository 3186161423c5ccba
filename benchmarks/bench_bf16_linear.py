"""bfloat16 against float32 for one linear layer on this machine, eager.

Tells whether a model's bf16 slowdown comes from its matrix products: the shape
is a Chronos-2 / Toto feed-forward input projection (d_model 768 to d_ff 3072)
over 512 tokens (8 series of 64 patches).

    .venv/bin/python benchmarks/bench_bf16_linear.py --runs 50
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-out", type=int, default=3072)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"Linear({args.d_in}, {args.d_out}) over {args.tokens} tokens, {args.runs} runs after 5 warm-up")
    flops = 2 * args.tokens * args.d_in * args.d_out
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        lin = torch.nn.Linear(args.d_in, args.d_out).to(dtype)
        x = torch.randn(args.tokens, args.d_in, dtype=dtype)
        with torch.inference_mode():
            for _ in range(5):
                lin(x)
            t0 = time.perf_counter()
            for _ in range(args.runs):
                lin(x)
            dt = (time.perf_counter() - t0) / args.runs
        print(f"{str(dtype):15s} {dt * 1e3:8.3f} ms  {flops / dt / 1e9:8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
