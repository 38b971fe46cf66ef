"""tests/gpu/counts.sh: a Triton vector add launched K times (after one
warm-up launch that compiles it).  When libphos is preloaded, its own
counters are read before and after the K launches (phos_stats through
ctypes): exactly K launches and no allocation must be seen in between.
Prints `KNOWN triton_launches K`, `INFO phos_launches_in_loop N`,
`INFO phos_allocs_in_loop N`, then DONE.
usage: count_triton.py [K]"""
import ctypes
import sys

import torch
import triton
import triton.language as tl

K = int(sys.argv[1]) if len(sys.argv) > 1 else 200


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)


def phos_counters():
    try:
        fn = ctypes.CDLL(None).phos_stats
    except (AttributeError, OSError):
        return None
    buf = (ctypes.c_uint64 * 64)()
    if fn(buf, ctypes.c_size_t(ctypes.sizeof(buf))) != 0:
        return None
    return int(buf[1]), int(buf[5])


n = 1 << 20
x = torch.rand(n, device="cuda")
y = torch.rand(n, device="cuda")
out = torch.empty_like(x)
grid = (triton.cdiv(n, 1024),)
add_kernel[grid](x, y, out, n, BLOCK=1024)  # compiles; counted in the totals
torch.cuda.synchronize()
start = phos_counters()
for _ in range(K):
    add_kernel[grid](x, y, out, n, BLOCK=1024)
torch.cuda.synchronize()
end = phos_counters()
ok = torch.allclose(out, x + y)
print(f"INFO triton_version {triton.__version__}", flush=True)
print(f"INFO result_ok {int(ok)}", flush=True)
print(f"KNOWN triton_launches {K}", flush=True)
if start is not None and end is not None:
    print(f"INFO phos_launches_in_loop {end[0] - start[0]}", flush=True)
    print(f"INFO phos_allocs_in_loop {end[1] - start[1]}", flush=True)
print("DONE" if ok else "WRONG RESULT", flush=True)
