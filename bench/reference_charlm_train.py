#!/usr/bin/python3
"""Times one training step of the reference PyTorch Flowformer language model
(examples/charlm/torch_reference.py) at the spec's "mini" configuration
(6 layers, 6 heads, n_embd 192, block 128, batch 64, vocabulary 65, dropout
0.1, AdamW with clipping), one process per thread count, and optionally
flowgrad's charlm at the same configuration for comparison:

    /usr/bin/python3 bench/reference_charlm_train.py [--threads 1,2] [--steps 5]
        [--variants reference,masked] [--charlm build/examples/charlm]

Variant "reference" is the authors' arithmetic (the causal dot product
through a materialised L×D×M cumulative sum); "masked" computes that last
step as a lower-triangular L×L product per head, the fastest plain-PyTorch
form at block 128 (see torch_reference.py).

Each process runs one warm-up step, then --steps timed steps on random
windows of Tiny Shakespeare; it reports mean seconds/step, tokens/s and its
peak RSS. charlm's per-step times are read from its log.csv (the first step
is the warm-up and is skipped), its peak RSS from wait4. Both
torch.set_num_threads and OpenBLAS's own thread count are set, so the two
thread pools do not oversubscribe the cores. Not run in CI.
"""
import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "examples", "data", "tinyshakespeare.txt")
MINI = dict(n_layer=6, n_head=6, n_embd=192, block_size=128, vocab_size=65, dropout=0.1)
BATCH = 64


sys.path.insert(0, HERE)
from reference_flow_attention import set_threads  # noqa: E402  torch and OpenBLAS thread counts together


def run_single(threads, steps, causal_dot):
    import torch
    sys.path.insert(0, os.path.join(HERE, "..", "examples", "charlm"))
    import torch_reference as ref
    set_threads(threads)
    torch.manual_seed(1337)
    with open(DATA, "rb") as f:
        text = f.read()
    chars = sorted(set(text))
    ids = torch.zeros(256, dtype=torch.int64)  # byte -> id, as charlm's sorted vocabulary
    ids[torch.tensor(chars)] = torch.arange(len(chars))
    data = ids[torch.frombuffer(bytearray(text), dtype=torch.uint8).long()]
    config = ref.Config(**MINI, causal_dot=causal_dot)
    if len(chars) != config.vocab_size:
        sys.exit(f"expected a vocabulary of {config.vocab_size} characters, {DATA} has {len(chars)}")
    model = ref.FlowformerLM(config)
    optimizer = ref.make_optimizer(model, lr=5e-4, weight_decay=0.1)

    def batch():
        starts = torch.randint(len(data) - config.block_size - 1, (BATCH,))
        windows = torch.stack([data[s:s + config.block_size + 1] for s in starts])
        return windows[:, :-1], windows[:, 1:]

    ref.train_step(model, optimizer, *batch())  # warm-up
    times, losses = [], []
    for _ in range(steps):
        tokens, targets = batch()
        start = time.perf_counter()
        losses.append(ref.train_step(model, optimizer, tokens, targets))
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{statistics.mean(times):.4f} {statistics.median(times):.4f} {peak_mb:.0f} {losses[-1]:.4f}")


def run_process(command, stdout):
    """Runs command to completion; returns (exit code, peak RSS of that process in MB)."""
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024


def run_charlm(charlm, threads, steps):
    """(mean seconds/step over the steps after the first, peak RSS MB) of charlm train."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [charlm, "train", "--steps", str(steps + 1), "--batch", str(BATCH),
                   "--block", str(MINI["block_size"]), "--layers", str(MINI["n_layer"]),
                   "--heads", str(MINI["n_head"]), "--embd", str(MINI["n_embd"]),
                   "--dropout", str(MINI["dropout"]), "--threads", str(threads), "--eval-every", "1000000",
                   "--eval-batches", "1", "--sample-chars", "0", "--save-every", "1000000", "--out", tmp]
        with open(os.path.join(tmp, "stdout.txt"), "w") as out:
            code, peak_mb = run_process(command, out)
        if code != 0:
            with open(os.path.join(tmp, "stdout.txt")) as out:
                raise RuntimeError(f"charlm failed ({code}): {out.read()[-300:]}")
        with open(os.path.join(tmp, "log.csv")) as log:
            rows = list(csv.DictReader(log))
    tokens_per_step = BATCH * MINI["block_size"]
    seconds = [tokens_per_step / float(row["tokens_per_s"]) for row in rows[1:]]
    return statistics.mean(seconds), statistics.median(seconds), peak_mb, float(rows[-1]["train_loss"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--variants", default="reference,masked", help="PyTorch variants to time")
    parser.add_argument("--charlm", help="flowgrad's charlm binary: also time it at the same configuration")
    parser.add_argument("--single", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        run_single(int(args.single[0]), args.steps, args.single[1])
        return
    tokens_per_step = BATCH * MINI["block_size"]
    print(f"charlm 'mini' training step: {MINI}, batch {BATCH} ({tokens_per_step} tokens), "
          f"1 warm-up + {args.steps} timed steps")
    print(f"{'implementation':18}{'threads':>8}{'s/step':>10}{'median':>10}{'tokens/s':>10}{'peak RSS MB':>13}"
          f"{'loss':>8}")
    results = {}
    for threads in (int(t) for t in args.threads.split(",")):
        runs = [(f"pytorch-{variant}", variant) for variant in args.variants.split(",") if variant]
        runs += [("flowgrad", None)] if args.charlm else []
        for name, variant in runs:
            try:
                if variant is None:
                    mean, median, peak, loss = run_charlm(args.charlm, threads, args.steps)
                else:
                    command = [sys.executable, __file__, "--single", str(threads), variant, "--steps", str(args.steps)]
                    result = subprocess.run(command, capture_output=True, text=True)
                    if result.returncode != 0:
                        raise RuntimeError(result.stderr.strip()[-300:])
                    mean, median, peak, loss = (float(x) for x in result.stdout.split())
            except RuntimeError as error:
                print(f"{name:18}{threads:>8}   failed: {error}")
                continue
            results[name, threads] = mean
            print(f"{name:18}{threads:>8}{mean:>10.3f}{median:>10.3f}{tokens_per_step / mean:>10.0f}"
                  f"{peak:>13.0f}{loss:>8.3f}", flush=True)
    for (name, threads), seconds in results.items():
        if name != "flowgrad" and ("flowgrad", threads) in results:
            print(f"{threads} thread(s): flowgrad is {seconds / results['flowgrad', threads]:.2f}x as fast as {name}")
    for name in sorted({name for name, _ in results}):
        if (name, 1) in results and (name, 2) in results:
            print(f"{name}: 2 threads are {results[name, 1] / results[name, 2]:.2f}x as fast as 1")


if __name__ == "__main__":
    main()
