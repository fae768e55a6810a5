#!/usr/bin/python3
"""Checks charlm against the PyTorch reference model: loads a charlm
checkpoint into torch_reference.FlowformerLM, runs `charlm logits` on a
prompt, computes the reference logits for the same tokens and compares.

    /usr/bin/python3 examples/charlm/interop_check.py CHECKPOINT [--charlm build/examples/charlm]
        [--prompt TEXT] [--dtypes float32,float64] [--tol-float32 1e-4] [--tol-float64 1e-9]
        [--causal-dot reference|masked]

For each dtype both sides run in that precision (charlm converts the stored
float32 weights). Prints max |difference| of the logits per dtype, and for
orientation each float32 side's distance from the float64 reference; exits
1 if a difference exceeds its tolerance. Not run in CI.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_reference as ref  # noqa: E402

DEFAULT_PROMPT = ("ROMEO:\nBut, soft! what light through yonder window breaks?\n"
                  "It is the east, and Juliet is the sun.\nArise, fair sun, and kill the envious moon,\n")


def charlm_logits(charlm, checkpoint, prompt, dtype, threads):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.safetensors")
        command = [charlm, "logits", "--checkpoint", checkpoint, "--prompt", prompt, "--out", out,
                   "--dtype", dtype, "--threads", str(threads)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"interop_check: {' '.join(command[:2])} failed: {result.stderr.strip()}")
        tensors, _ = ref.read_safetensors(out)
    return tensors["logits"], tensors["tokens"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--charlm", default=os.path.join(HERE, "..", "..", "build", "examples", "charlm"))
    parser.add_argument("--prompt", help="default: a Shakespeare passage cut to the model's block_size")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--tol-float32", type=float, default=1e-4)
    parser.add_argument("--tol-float64", type=float, default=1e-9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--causal-dot", default="reference", choices=("reference", "masked"),
                        help="how torch_reference computes the causal dot product")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    _, metadata = ref.read_safetensors(args.checkpoint)
    config, chars = ref.parse_charlm_config(metadata["config"])
    prompt = args.prompt if args.prompt is not None else DEFAULT_PROMPT[:config.block_size]
    # charlm's ids: the byte's index in the sorted vocabulary.
    expected_tokens = torch.tensor([chars.index(chr(b)) for b in prompt.encode()], dtype=torch.int64)
    config.causal_dot = args.causal_dot
    print(f"checkpoint {args.checkpoint}: {config}")
    print(f"prompt of {len(expected_tokens)} tokens: {prompt!r}")

    failed = False
    reference, flowgrad = {}, {}
    for name in args.dtypes.split(","):
        dtype = {"float32": torch.float32, "float64": torch.float64}[name]
        logits, tokens = charlm_logits(args.charlm, args.checkpoint, prompt, name, args.threads)
        if not torch.equal(tokens, expected_tokens):
            sys.exit(f"interop_check: charlm encoded the prompt as {tokens.tolist()}, "
                     f"expected {expected_tokens.tolist()}")
        model, _ = ref.load_charlm_checkpoint(args.checkpoint, dtype, args.causal_dot)
        with torch.no_grad():
            torch_logits = model(tokens[None, :])[0]
        if logits.dtype != dtype or logits.shape != torch_logits.shape:
            sys.exit(f"interop_check: charlm wrote {logits.dtype} {list(logits.shape)}, "
                     f"expected {dtype} {list(torch_logits.shape)}")
        diff = (logits - torch_logits).abs()
        tolerance = args.tol_float32 if dtype == torch.float32 else args.tol_float64
        worst = int(diff.max(dim=1).values.argmax())
        ok = diff.max().item() <= tolerance
        failed |= not ok
        print(f"{name}: max |charlm - torch| = {diff.max().item():.3e} (position {worst}), "
              f"mean {diff.mean().item():.3e}, max |logit| {torch_logits.abs().max().item():.3f}, "
              f"tolerance {tolerance:g}: {'ok' if ok else 'FAILED'}")
        reference[name], flowgrad[name] = torch_logits.double(), logits.double()
    if "float32" in reference and "float64" in reference:
        exact = reference["float64"]
        print(f"float32 error against the float64 reference: charlm "
              f"{(flowgrad['float32'] - exact).abs().max().item():.3e}, torch "
              f"{(reference['float32'] - exact).abs().max().item():.3e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
