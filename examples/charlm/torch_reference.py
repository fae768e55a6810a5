#!/usr/bin/python3
"""The reference GPT-style Flowformer language model (attention as docs/flow-attention-forward.md specifies) in
PyTorch, for checking and timing charlm against it.

Pre-LayerNorm blocks with causal Flow-Attention in the authors' exact
arithmetic (causal_flow_attention_reference from tests/golden/make_golden.py,
which materialises the L×D×M prefix states as the authors' code does), a
gelu-tanh MLP, and parameter names equal to the spec's state_dict, so a
charlm checkpoint's "model.*" tensors load with model.load_state_dict().

    import torch_reference as ref
    model, chars = ref.load_charlm_checkpoint("run/checkpoint.safetensors", torch.float64)
    logits = model(tokens)                      # tokens int64 [B, T]

Config.causal_dot selects how the last step, Σ_{j≤i} (q_i·k_j) C_j v_j, is
computed: "reference" (the authors' L×D×M cumulative sum, the default) or
"masked" (a lower-triangular L×L product per head: the same sums in another
order, far cheaper for short blocks; a fairer PyTorch baseline for timing).

train_step() is one optimisation step with the spec's defaults (AdamW betas
(0.9, 0.95), weight decay 0.1 on matrix weights only, clipping at 1.0).
Safetensors files are read and written by hand (no safetensors package).
Not run in CI.
"""
import dataclasses
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "golden"))
from make_golden import causal_flow_attention_reference, write_safetensors  # noqa: E402


@dataclasses.dataclass
class Config:
    vocab_size: int = 65
    block_size: int = 128
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 192
    dropout: float = 0.1
    causal_dot: str = "reference"  # or "masked"

    @staticmethod
    def mini(vocab_size=65):
        return Config(vocab_size=vocab_size)


EPS = 1e-6


def causal_flow_attention_masked(queries, keys, values):
    """causal_flow_attention_reference with its last step as a masked L×L product."""
    queries = torch.sigmoid(queries)
    keys = torch.sigmoid(keys)
    normal = (torch.arange(queries.shape[2], dtype=queries.dtype) + 1.0)[None, None, :]
    sink_incoming = 1.0 / torch.einsum("nhld,nhld->nhl", queries + EPS, keys.cumsum(dim=2) + EPS) * normal
    source_outgoing = 1.0 / torch.einsum("nhld,nhld->nhl", keys + EPS, queries.cumsum(dim=2) + EPS) * normal
    conserved_sink = torch.einsum("nhld,nhld->nhl", queries + EPS,
                                  (keys * source_outgoing[:, :, :, None]).cumsum(dim=2) + EPS) / normal
    conserved_source = torch.einsum("nhld,nhld->nhl", keys + EPS,
                                    (queries * sink_incoming[:, :, :, None]).cumsum(dim=2) + EPS) / normal
    conserved_source = torch.exp(torch.clamp(conserved_source, min=-1.0, max=1.0))
    sink_allocation = torch.sigmoid(conserved_sink)
    source_competition = conserved_source / conserved_source.cumsum(dim=-1) * normal
    scaled_q = queries * (sink_incoming[:, :, :, None] / normal[:, :, :, None])
    weighted_v = values * source_competition[:, :, :, None]
    scores = torch.matmul(scaled_q, keys.transpose(-1, -2)).tril()  # [.., L, L], j <= i kept
    return torch.matmul(scores, weighted_v) * sink_allocation[:, :, :, None]


class FlowAttentionCausal(nn.Module):
    """The authors' Flow_Attention_Causal: projections, heads, Flow-Attention, out projection, dropout."""

    def __init__(self, n_embd, n_head, dropout, causal_dot="reference"):
        super().__init__()
        if causal_dot not in ("reference", "masked"):
            raise ValueError(f"causal_dot must be reference or masked, got {causal_dot!r}")
        self.attend = causal_flow_attention_reference if causal_dot == "reference" else causal_flow_attention_masked
        self.n_head = n_head
        self.query_projection = nn.Linear(n_embd, n_embd)
        self.key_projection = nn.Linear(n_embd, n_embd)
        self.value_projection = nn.Linear(n_embd, n_embd)
        self.out_projection = nn.Linear(n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        # [B, T, C] -> [B, H, T, C/H]; the reference applies the sigmoid feature map itself.
        q, k, v = (proj(x).view(B, T, self.n_head, -1).transpose(1, 2)
                   for proj in (self.query_projection, self.key_projection, self.value_projection))
        heads = self.attend(q, k, v).transpose(1, 2).reshape(B, T, C)
        return self.dropout(self.out_projection(heads))


class MLP(nn.Module):
    def __init__(self, n_embd, dropout):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = FlowAttentionCausal(config.n_embd, config.n_head, config.dropout, config.causal_dot)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config.n_embd, config.dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class FlowformerLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        # Scaled init of the MLP's residual projection only.
        for block in self.transformer.h:
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens):
        T = tokens.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} exceeds block_size={self.config.block_size}")
        x = self.transformer.drop(self.transformer.wte(tokens) + self.transformer.wpe.weight[:T])
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    def loss(self, tokens, targets):
        logits = self(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


# ---- training ----

def make_optimizer(model, lr=5e-4, weight_decay=0.1):
    """AdamW, betas (0.9, 0.95); decay on the Linear weights only (not biases, LayerNorm, embeddings)."""
    decayed, not_decayed = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            (decayed if isinstance(module, nn.Linear) and name == "weight" else not_decayed).append(param)
    return torch.optim.AdamW([{"params": decayed, "weight_decay": weight_decay},
                              {"params": not_decayed, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def train_step(model, optimizer, tokens, targets, grad_clip=1.0):
    """One step in training mode (dropout on); returns the loss as a float."""
    model.train()
    loss = model.loss(tokens, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


# ---- safetensors and charlm checkpoints ----

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}


def read_safetensors(path):
    """(tensors by name, metadata) of a safetensors file with F32/F64/I64 tensors."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    metadata = header.pop("__metadata__", {})
    data = blob[8 + header_len:]
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = _DTYPES[entry["dtype"]]
        # bytearray: a writable copy, so torch.frombuffer does not warn.
        tensors[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(entry["shape"]) \
            if end > begin else torch.zeros(entry["shape"], dtype=dtype)
    return tensors, metadata


def parse_charlm_config(text):
    """(Config, characters in id order) from a charlm checkpoint's "config" metadata (JSON)."""
    stored = json.loads(text)
    if stored.get("kind") != "char_lm":
        raise ValueError("the checkpoint was not written by charlm")
    model = stored["model"]
    if not model.get("causal", True) or model.get("attention", "flow") != "flow":
        raise ValueError(f"the reference model is causal Flow-Attention only; checkpoint has {model}")
    chars = bytes(stored["vocabulary"]).decode("latin-1")
    config = Config(vocab_size=model["vocab_size"], block_size=model["block_size"], n_layer=model["n_layer"],
                    n_head=model["n_head"], n_embd=model["n_embd"], dropout=model["dropout"])
    return config, chars


def load_charlm_checkpoint(path, dtype=torch.float32, causal_dot="reference"):
    """A reference model in eval mode holding a charlm checkpoint's weights, and its vocabulary."""
    tensors, metadata = read_safetensors(path)
    config, chars = parse_charlm_config(metadata["config"])
    config.causal_dot = causal_dot
    model = FlowformerLM(config).to(dtype)
    state = {name[len("model."):]: t.to(dtype) for name, t in tensors.items() if name.startswith("model.")}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, chars


__all__ = ["Config", "causal_flow_attention_masked", "FlowformerLM", "make_optimizer", "train_step", "read_safetensors", "write_safetensors",
           "parse_charlm_config", "load_charlm_checkpoint"]
