#!/usr/bin/python3
"""Golden values for the Flow-Attention tests, computed with PyTorch.

Implements the reference arithmetic of docs/flow-attention-forward.md exactly as the
authors' PyTorch code does (after the projections and the head split), runs
autograd through it, and writes small safetensors files of inputs, outputs
and gradients. Run by hand with Debian's python3-torch:

    /usr/bin/python3 tests/golden/make_golden.py

The C++ tests (tests/test_flow_attention.cpp) compare against the files it
writes next to itself. Not run in CI.
"""
import json
import os
import struct

import torch

EPS = 1e-6
HERE = os.path.dirname(os.path.abspath(__file__))


def flow_attention_reference(queries, keys, values):
    """Normal Flow-Attention on [B, H, L, D], [B, H, S, D], [B, H, S, M]."""
    queries = torch.sigmoid(queries)
    keys = torch.sigmoid(keys)
    # (1) incoming and outgoing flow
    sink_incoming = 1.0 / torch.einsum("nhld,nhd->nhl", queries + EPS, keys.sum(dim=2) + EPS)
    source_outgoing = 1.0 / torch.einsum("nhld,nhd->nhl", keys + EPS, queries.sum(dim=2) + EPS)
    # (2) conservation refinement
    conserved_sink = torch.einsum("nhld,nhd->nhl", queries + EPS,
                                  (keys * source_outgoing[:, :, :, None]).sum(dim=2) + EPS)
    conserved_source = torch.einsum("nhld,nhd->nhl", keys + EPS,
                                    (queries * sink_incoming[:, :, :, None]).sum(dim=2) + EPS)
    conserved_source = torch.clamp(conserved_source, min=-1.0, max=1.0)
    # (3) competition and allocation
    sink_allocation = torch.sigmoid(conserved_sink * (float(queries.shape[2]) / float(keys.shape[2])))
    source_competition = torch.softmax(conserved_source, dim=-1) * float(keys.shape[2])
    # (4) dot product, keys-values first
    kv = torch.einsum("nhsd,nhsm->nhdm", keys, values * source_competition[:, :, :, None])
    out = torch.einsum("nhld,nhdm->nhlm", queries * sink_incoming[:, :, :, None], kv)
    return out * sink_allocation[:, :, :, None]


def causal_flow_attention_reference(queries, keys, values):
    """Causal Flow-Attention on [B, H, L, D], [B, H, L, D], [B, H, L, M]."""
    queries = torch.sigmoid(queries)
    keys = torch.sigmoid(keys)
    sink_incoming = 1.0 / torch.einsum("nhld,nhld->nhl", queries + EPS, keys.cumsum(dim=2) + EPS)
    source_outgoing = 1.0 / torch.einsum("nhld,nhld->nhl", keys + EPS, queries.cumsum(dim=2) + EPS)
    normal = (torch.arange(queries.shape[2], dtype=queries.dtype) + 1.0)[None, None, :]
    sink_incoming = sink_incoming * normal
    source_outgoing = source_outgoing * normal
    conserved_sink = torch.einsum("nhld,nhld->nhl", queries + EPS,
                                  (keys * source_outgoing[:, :, :, None]).cumsum(dim=2) + EPS) / normal
    conserved_source = torch.einsum("nhld,nhld->nhl", keys + EPS,
                                    (queries * sink_incoming[:, :, :, None]).cumsum(dim=2) + EPS) / normal
    conserved_source = torch.clamp(conserved_source, min=-1.0, max=1.0)
    sink_allocation = torch.sigmoid(conserved_sink)
    conserved_source = torch.exp(conserved_source)
    source_competition = (conserved_source / conserved_source.cumsum(dim=-1)) * normal
    # causal dot product through the materialised L×D×M prefix states
    scaled_q = queries * (sink_incoming[:, :, :, None] / normal[:, :, :, None])
    weighted_v = values * source_competition[:, :, :, None]
    kv = torch.einsum("nhld,nhlm->nhldm", keys, weighted_v).cumsum(dim=2)
    out = torch.einsum("nhld,nhldm->nhlm", scaled_q, kv)
    return out * sink_allocation[:, :, :, None]


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        dtype = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def make_case(name, shapes, causal, dtype, seed, scale=1.0, padded_lengths=None):
    """Inputs, out and gradients for one configuration.

    With padded_lengths (one real key count per batch element), keys and
    values beyond the real count are filled with noise and masked out: the
    expected output of each batch element is the reference on its real keys
    alone, and padded keys get zero gradient.
    """
    B, H, L, S, D, M = shapes
    gen = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, H, L, D, generator=gen, dtype=torch.float64) * scale).to(dtype)
    k = (torch.randn(B, H, S, D, generator=gen, dtype=torch.float64) * scale).to(dtype)
    v = torch.randn(B, H, S, M, generator=gen, dtype=torch.float64).to(dtype)
    grad_out = torch.randn(B, H, L, M, generator=gen, dtype=torch.float64).to(dtype)
    q.requires_grad_()
    k.requires_grad_()
    v.requires_grad_()
    tensors = {"q": q, "k": k, "v": v, "grad_out": grad_out}
    if padded_lengths is None:
        fn = causal_flow_attention_reference if causal else flow_attention_reference
        out = fn(q, k, v)
    else:
        mask = torch.zeros(B, S, dtype=torch.int64)
        outs = []
        for b, real in enumerate(padded_lengths):
            mask[b, :real] = 1
            outs.append(flow_attention_reference(q[b:b + 1], k[b:b + 1, :, :real], v[b:b + 1, :, :real]))
        out = torch.cat(outs, dim=0)
        tensors["mask"] = mask
    out.backward(grad_out)
    tensors.update({"out": out, "grad_q": q.grad, "grad_k": k.grad, "grad_v": v.grad})
    metadata = {"causal": "1" if causal else "0", "torch": torch.__version__,
                "generator": "tests/golden/make_golden.py"}
    path = os.path.join(HERE, f"{name}_{'f64' if dtype == torch.float64 else 'f32'}.safetensors")
    write_safetensors(path, tensors, metadata)
    print("wrote", os.path.relpath(path), {n: list(t.shape) for n, t in tensors.items()})


def main():
    torch.set_num_threads(1)
    for dtype in (torch.float64, torch.float32):
        make_case("normal_cross", (2, 3, 7, 5, 4, 3), False, dtype, seed=1)
        make_case("normal_saturated", (1, 2, 6, 6, 8, 8), False, dtype, seed=2, scale=5.0)
        make_case("normal_masked", (3, 2, 5, 6, 4, 3), False, dtype, seed=3, padded_lengths=[6, 4, 1])
        make_case("causal_small", (2, 2, 9, 9, 4, 3), True, dtype, seed=4)
        make_case("causal_chunks", (1, 2, 300, 300, 8, 6), True, dtype, seed=5)
        make_case("causal_length_one", (1, 1, 1, 1, 3, 2), True, dtype, seed=6)


if __name__ == "__main__":
    main()
