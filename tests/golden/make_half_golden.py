#!/usr/bin/python3
"""A safetensors file of float16 and bfloat16 tensors, as PyTorch stores them,
next to PyTorch's own conversion of each to float32 (tests/test_serialize.cpp
checks that flowgrad reads the half-precision tensors to exactly those
values). Run by hand with Debian's python3-torch:

    /usr/bin/python3 tests/golden/make_half_golden.py
"""
import json
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def raw_bytes(t):
    """Little-endian element bytes of a contiguous tensor (bf16 has no numpy dtype)."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
    return t.contiguous().numpy().astype("<f4").tobytes()


def main():
    torch.manual_seed(0)
    special = [0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, 1e-5, float("inf"), float("-inf"), float("nan")]
    tensors = {
        "half": torch.cat([torch.tensor(special), torch.randn(22) * 100]).to(torch.float16).reshape(4, 8),
        "bfloat16": torch.cat([torch.tensor(special), torch.tensor([3e38, 1e-40]), torch.randn(20) * 1e4])
        .to(torch.bfloat16)
        .reshape(2, 16),
    }
    tensors["half_as_f32"] = tensors["half"].float()
    tensors["bfloat16_as_f32"] = tensors["bfloat16"].float()
    codes = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, t in tensors.items():
        chunk = raw_bytes(t)
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(chunk)]}
        data += chunk
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(os.path.join(HERE, "half_precision.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


if __name__ == "__main__":
    main()
