"""tests/gpu/counts.sh: a short deterministic PyTorch workload whose kernel
launches and allocations libphos counts.  No CUDA graphs, no torch.compile.
usage: count_torch.py train|conv [STEPS]
  train  a small GPT-like model, AdamW (cuBLAS, fused kernels); run it under
         each allocator (PYTORCH_CUDA_ALLOC_CONF, set by the caller)
  conv   conv2d forward/backward with cuDNN enabled (exit 3 if no cuDNN)
Prints `INFO key value` lines (allocator backend, the caching allocator's
segment count, libphos's own counters if it is preloaded), then DONE."""
import ctypes
import os
import sys

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from gpt import GPT  # noqa: E402  (tests/gpu/gpt.py, beside this script)

mode = sys.argv[1] if len(sys.argv) > 1 else "train"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10


def phos_counters():
    """libphos's (launches, allocs) if it is preloaded, else None."""
    try:
        fn = ctypes.CDLL(None).phos_stats
    except (AttributeError, OSError):
        return None
    buf = (ctypes.c_uint64 * 64)()
    if fn(buf, ctypes.c_size_t(ctypes.sizeof(buf))) != 0:
        return None
    return int(buf[1]), int(buf[5])


torch.manual_seed(1234)
torch.backends.cudnn.benchmark = False
torch.backends.cuda.matmul.allow_tf32 = False
dev = torch.device("cuda")

if mode == "conv":
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.deterministic = True
    if not torch.backends.cudnn.is_available():
        print("SKIP no cuDNN in this PyTorch", flush=True)
        sys.exit(3)
    print(f"INFO cudnn_version {torch.backends.cudnn.version()}", flush=True)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 3, 64, 64, device=dev)
    y = torch.randint(0, 10, (16,), device=dev)
else:
    cfg = dict(vocab=1024, ctx=64, d=128, heads=4, layers=2, batch=8)
    model = GPT(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    gen = torch.Generator(device=dev)
    gen.manual_seed(42)

print(f"INFO allocator_backend {torch.cuda.get_allocator_backend()}", flush=True)
print(f"INFO alloc_conf {os.environ.get('PYTORCH_CUDA_ALLOC_CONF', '')!r}", flush=True)
start = phos_counters()
seg0 = torch.cuda.memory_stats().get("segment.all.allocated", -1)
for step in range(1, steps + 1):
    if mode == "conv":
        loss = nn.functional.cross_entropy(model(x), y)
    else:
        data = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["ctx"] + 1), device=dev,
                             generator=gen)
        logits = model(data[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab"]),
                                           data[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item():.6f}", flush=True)
torch.cuda.synchronize()
stats = torch.cuda.memory_stats()
seg1 = stats.get("segment.all.allocated", -1)
print(f"INFO segments_allocated {seg1}", flush=True)
print(f"INFO segments_allocated_in_loop {seg1 - seg0 if seg0 >= 0 and seg1 >= 0 else -1}",
      flush=True)
end = phos_counters()
if start is not None and end is not None:
    print(f"INFO phos_launches_in_loop {end[0] - start[0]}", flush=True)
    print(f"INFO phos_allocs_in_loop {end[1] - start[1]}", flush=True)
print("DONE", flush=True)
