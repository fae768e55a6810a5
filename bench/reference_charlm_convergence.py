#!/usr/bin/python3
"""Does charlm learn like the reference? Trains the same model with the same
recipe in flowgrad (`charlm train`) and in PyTorch (examples/charlm/
torch_reference.py) for the same number of steps, from several seeds each,
then scores every trained model with one evaluation: the PyTorch reference
forward (flowgrad's checkpoints are loaded into it) over the whole
validation split in non-overlapping windows, so the two sides differ only in
how they were trained.

    /usr/bin/python3 bench/reference_charlm_convergence.py --charlm build/examples/charlm
        [--seeds 1,2,3] [--steps 1500] [--jobs 2] [--threads 1]

The defaults are the README's main job (4 layers, 4 heads, width 128, block
64, batch 32, lr 2e-3, warm-up 50, cosine to lr/10, dropout 0, AdamW betas
(0.9, 0.95), weight decay 0.1 on matrix weights, clipping at 1.0). Seeds
differ between the sides (the generators differ), so the comparison is of
means against the seed-to-seed spread. --jobs processes run side by side,
each with --threads threads. Not run in CI.
"""
import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "examples", "data", "tinyshakespeare.txt")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples", "charlm"))


def recipe(args):
    return dict(n_layer=args.layers, n_head=args.heads, n_embd=args.embd, block_size=args.block,
                batch=args.batch, lr=args.lr, warmup=args.warmup, steps=args.steps, dropout=args.dropout)


def lr_at(step, r):
    """charlm's WarmupCosineLR: linear warm-up to lr, cosine down to lr/10 at the last step."""
    min_lr, warmup = r["lr"] * 0.1, min(r["warmup"], r["steps"])
    if step < warmup:
        return r["lr"] * (step + 1) / warmup
    if step >= r["steps"]:
        return min_lr
    ratio = (step - warmup) / (r["steps"] - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (r["lr"] - min_lr)


def load_ids():
    import torch
    with open(DATA, "rb") as f:
        text = f.read()
    chars = sorted(set(text))  # charlm's vocabulary: the sorted bytes of the file
    lookup = torch.zeros(256, dtype=torch.int64)
    lookup[torch.tensor(chars)] = torch.arange(len(chars))
    ids = lookup[torch.frombuffer(bytearray(text), dtype=torch.uint8).long()]
    split = len(ids) * 9 // 10
    return ids[:split], ids[split:], len(chars)


def validation_loss(model, validation, block):
    """Mean cross-entropy over the validation split cut into non-overlapping windows."""
    import torch
    import torch.nn.functional as F
    windows = (len(validation) - 1) // block
    tokens = validation[:windows * block].view(windows, block)
    targets = validation[1:windows * block + 1].view(windows, block)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, windows, 64):
            logits = model(tokens[start:start + 64])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[start:start + 64].reshape(-1),
                                     reduction="sum").item()
    return total / (windows * block)


def train_pytorch(seed, r, threads):
    import torch
    import torch_reference as ref
    from reference_flow_attention import set_threads
    set_threads(threads)
    torch.manual_seed(seed)
    train, validation, vocab = load_ids()
    config = ref.Config(vocab_size=vocab, block_size=r["block_size"], n_layer=r["n_layer"], n_head=r["n_head"],
                        n_embd=r["n_embd"], dropout=r["dropout"], causal_dot="masked")
    model = ref.FlowformerLM(config)
    optimizer = ref.make_optimizer(model, lr=r["lr"], weight_decay=0.1)
    block = r["block_size"]
    for step in range(r["steps"]):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, r)
        starts = torch.randint(len(train) - block, (r["batch"],))
        windows = torch.stack([train[s:s + block + 1] for s in starts])
        ref.train_step(model, optimizer, windows[:, :-1], windows[:, 1:])
    return validation_loss(model, validation, block)


def train_flowgrad(charlm, seed, r, threads, scratch):
    import torch
    import torch_reference as ref
    out = os.path.join(scratch, f"flowgrad-{seed}")
    command = [charlm, "train", "--steps", str(r["steps"]), "--batch", str(r["batch"]),
               "--block", str(r["block_size"]), "--layers", str(r["n_layer"]), "--heads", str(r["n_head"]),
               "--embd", str(r["n_embd"]), "--lr", str(r["lr"]), "--warmup", str(r["warmup"]),
               "--dropout", str(r["dropout"]), "--seed", str(seed), "--threads", str(threads),
               "--eval-every", str(r["steps"]), "--save-every", str(r["steps"]), "--sample-chars", "0", "--out", out,
               "--overwrite"]  # a rerun replaces the earlier run of this seed
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"charlm failed: {result.stdout[-300:]}{result.stderr[-300:]}")
    model, _ = ref.load_charlm_checkpoint(os.path.join(out, "checkpoint.safetensors"), torch.float32,
                                          causal_dot="masked")
    _, validation, _ = load_ids()
    return validation_loss(model, validation, r["block_size"])


def run_one(args, side, seed, scratch):
    """Trains in a child process (own thread settings); returns (side, seed, val loss, seconds)."""
    start = time.perf_counter()
    command = [sys.executable, __file__, "--single", side, str(seed), "--scratch", scratch] + args.passthrough
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{side} seed {seed}: {result.stderr.strip()[-500:]}")
    return side, seed, float(result.stdout.split()[-1]), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--charlm", required=True)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    model_flags = [("--steps", int, 1500), ("--batch", int, 32), ("--block", int, 64), ("--layers", int, 4),
                   ("--heads", int, 4), ("--embd", int, 128), ("--lr", float, 2e-3), ("--warmup", int, 50),
                   ("--dropout", float, 0.0)]
    for flag, kind, default in model_flags:
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--single", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    r = recipe(args)
    if args.single:
        side, seed = args.single[0], int(args.single[1])
        loss = (train_pytorch(seed, r, args.threads) if side == "pytorch"
                else train_flowgrad(args.charlm, seed, r, args.threads, args.scratch))
        print(f"{loss:.6f}")
        return
    args.passthrough = ["--charlm", args.charlm, "--threads", str(args.threads)]
    for flag, _, _ in model_flags:
        args.passthrough += [flag, str(getattr(args, flag[2:].replace("-", "_")))]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"recipe: {r}; seeds {seeds}; {args.jobs} jobs x {args.threads} thread(s)", flush=True)
    results = {"flowgrad": [], "pytorch": []}
    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(args.jobs) as pool:
        runs = [pool.submit(run_one, args, side, seed, scratch) for seed in seeds for side in results]
        for run in runs:
            side, seed, loss, seconds = run.result()
            results[side].append(loss)
            print(f"{side:9} seed {seed}: validation loss {loss:.4f}  ({seconds:.0f} s)", flush=True)
    for side, losses in results.items():
        spread = statistics.stdev(losses) if len(losses) > 1 else float("nan")
        print(f"{side:9} mean {statistics.mean(losses):.4f}  sd {spread:.4f}  over {len(losses)} seeds")
    difference = statistics.mean(results["flowgrad"]) - statistics.mean(results["pytorch"])
    if len(seeds) > 1:
        pooled = math.sqrt((statistics.variance(results["flowgrad"]) + statistics.variance(results["pytorch"])) / 2)
        standard_error = pooled * math.sqrt(2 / len(seeds))
        print(f"flowgrad - pytorch = {difference:+.4f} ({difference / standard_error:+.2f} standard errors)")
    else:
        print(f"flowgrad - pytorch = {difference:+.4f}")


if __name__ == "__main__":
    main()
