#!/usr/bin/python3
"""Times the reference PyTorch Flow-Attention (the authors' arithmetic, as in
tests/golden/make_golden.py) on the shapes of bench_flow_attention, one
process per configuration, and prints a table comparable to it.

    /usr/bin/python3 bench/reference_flow_attention.py [--threads 2] [--lengths 1024,4096,16384]

Both torch.set_num_threads and OpenBLAS's own thread count are set, so the
two thread pools do not oversubscribe the cores. Not run in CI.
"""
import argparse
import ctypes
import os
import resource
import statistics
import subprocess
import sys
import time

HEADS, DIM = 8, 64


def set_threads(n):
    import torch
    torch.set_num_threads(n)
    try:
        ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(n)
    except OSError:
        pass


def run_single(kernel, backward, length, repeats, threads):
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
    from make_golden import causal_flow_attention_reference, flow_attention_reference
    set_threads(threads)
    fn = causal_flow_attention_reference if kernel == "causal" else flow_attention_reference
    gen = torch.Generator().manual_seed(0)
    q, k, v, g = (torch.randn(1, HEADS, length, DIM, generator=gen) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(backward)

    def step():
        out = fn(q, k, v)
        if backward:
            out.backward(g)
            q.grad = k.grad = v.grad = None

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{statistics.median(times):.6f} {peak_mb:.1f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", default="1024,4096,16384")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", nargs=3)
    args = parser.parse_args()
    if args.single:
        kernel, passes, length = args.single
        run_single(kernel, passes == "fwdbwd", int(length), args.repeats, args.threads)
        return
    print(f"reference PyTorch Flow-Attention, B=1 H={HEADS} D=M={DIM}, float32, {args.threads} thread(s)")
    print(f"{'kernel':9}{'pass':8}{'L':>8}{'seconds':>12}{'peak RSS MB':>14}")
    for kernel in ("causal", "normal"):
        for length in (int(x) for x in args.lengths.split(",")):
            for passes in ("fwd", "fwdbwd"):
                command = [sys.executable, __file__, "--single", kernel, passes, str(length),
                           "--threads", str(args.threads), "--repeats", str(args.repeats)]
                result = subprocess.run(command, capture_output=True, text=True)
                label = "fwd+bwd" if passes == "fwdbwd" else "fwd"
                if result.returncode != 0:
                    print(f"{kernel:9}{label:8}{length:>8}   failed: {result.stderr.strip()[-200:]}")
                    continue
                seconds, peak = result.stdout.split()
                print(f"{kernel:9}{label:8}{length:>8}{float(seconds):>12.4f}{float(peak):>14.0f}", flush=True)


if __name__ == "__main__":
    main()
