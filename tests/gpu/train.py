"""GPU test (c): deterministic training of a small GPT built from a config
(no downloads).  Prints `step N loss <float.hex>` for each step (and
`steptime N MS`, the step's wall time, which is not compared), then DONE.
usage: train.py STEPS SLEEP_S"""
import os
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from gpt import GPT  # noqa: E402  (tests/gpu/gpt.py, beside this script)

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
torch.manual_seed(1234)
torch.use_deterministic_algorithms(True)
torch.backends.cudnn.benchmark = False
torch.backends.cuda.matmul.allow_tf32 = False
cfg = dict(vocab=2048, ctx=128, d=256, heads=8, layers=4, batch=16)
dev = torch.device("cuda")
model = GPT(cfg).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
gen = torch.Generator(device=dev)
gen.manual_seed(42)
print(f"READY pid {os.getpid()} params {sum(p.numel() for p in model.parameters())}", flush=True)
for step in range(1, steps + 1):
    t0 = time.perf_counter()
    data = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["ctx"] + 1), device=dev, generator=gen)
    logits = model(data[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab"]), data[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item().hex()}", flush=True)
    print(f"steptime {step} {(time.perf_counter() - t0) * 1000:.1f}", flush=True)
    time.sleep(pause)
print("DONE", flush=True)
