"""GPU test (c): deterministic training of a small GPT built from a config
(no downloads).  Prints `step N loss <float.hex>` for each step (and
`steptime N MS`, the step's wall time, and `at N MS`, the wall clock in ms
when it ended, which are not compared), then DONE.  `MEMINFO` says how
much of the GPU memory in use is outside PyTorch's allocator.
usage: train.py STEPS SLEEP_S [DATA_GIB]
DATA_GIB: the token batches come from a dataset of that many GiB kept on
the GPU in 1 GiB shards (bench/torch_size.sh); step N reads shard
N % shards only, as a sharded data loader would."""
import os
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from gpt import GPT  # noqa: E402  (tests/gpu/gpt.py, beside this script)

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
data_gib = int(sys.argv[3]) if len(sys.argv) > 3 else 0
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
shards = []
if data_gib > 0:
    rows = (1 << 30) // 4 // (cfg["ctx"] + 1)
    gdata = torch.Generator(device=dev)
    gdata.manual_seed(7)
    for _ in range(data_gib):
        shards.append(torch.randint(0, cfg["vocab"], (rows, cfg["ctx"] + 1), device=dev,
                                    generator=gdata, dtype=torch.int32))
    torch.cuda.synchronize()
print(f"READY pid {os.getpid()} params {sum(p.numel() for p in model.parameters())}"
      f" data_gib {data_gib}", flush=True)
# what of the GPU's memory is outside PyTorch's allocator (the CUDA context,
# its modules, libraries' workspaces): what the driver checkpoint moves
free, total = torch.cuda.mem_get_info()
print(f"MEMINFO reserved_mib {torch.cuda.memory_reserved() >> 20}"
      f" device_used_mib {(total - free) >> 20}", flush=True)
for step in range(1, steps + 1):
    t0 = time.perf_counter()
    if shards:
        shard = shards[step % len(shards)]
        rows_idx = torch.randint(0, shard.shape[0], (cfg["batch"],), device=dev, generator=gen)
        data = shard[rows_idx].long()
    else:
        data = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["ctx"] + 1), device=dev,
                             generator=gen)
    logits = model(data[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab"]), data[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item().hex()}", flush=True)
    print(f"steptime {step} {(time.perf_counter() - t0) * 1000:.1f}", flush=True)
    print(f"at {step} {time.time_ns() // 1000000}", flush=True)
    time.sleep(pause)
print("DONE", flush=True)
