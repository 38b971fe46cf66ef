"""bench/overhead.sh: median time of a PyTorch training step of a fixed
GPT-like model (d=512, 6 layers, batch 32 x 256 tokens, fp32 without TF32:
about 10-50 ms a step on an H100).  Warm-up steps, then STEPS steps, each
timed with torch.cuda.synchronize() on both sides.  No downloads.
usage: torch_step.py [STEPS [WARMUP]]
Prints `RESULT median_step_ms X mean_step_ms Y steps N`, then DONE."""
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gpu"))
from gpt import GPT  # noqa: E402  (tests/gpu/gpt.py)

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
warmup = int(sys.argv[2]) if len(sys.argv) > 2 else 10
torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
cfg = dict(vocab=4096, ctx=256, d=512, heads=8, layers=6, batch=32)
dev = torch.device("cuda")
model = GPT(cfg).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
data = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["ctx"] + 1), device=dev)


def step():
    logits = model(data[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab"]), data[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


for _ in range(warmup):
    step()
torch.cuda.synchronize()
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    times.append((time.perf_counter() - t0) * 1e3)
print(f"RESULT median_step_ms {statistics.median(times):.4f} "
      f"mean_step_ms {statistics.mean(times):.4f} steps {steps}", flush=True)
print("DONE", flush=True)
