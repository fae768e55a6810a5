#!/usr/bin/python3
"""Numbers of the worked example in docs/flow-attention-gradients.md, and a
check of that document's backward formulas against PyTorch autograd.

    /usr/bin/python3 docs/figures/worked_example.py          # the example's tables
    /usr/bin/python3 docs/figures/worked_example.py --check  # plus random checks

The forward follows docs/flow-attention-forward.md in float64 with every
intermediate kept in the autograd graph; the backward is then written out a
second time, line by line as the gradient document states it (numpy), and
every gradient must agree with autograd. --check repeats this on random
normal heads and on causal heads, where the causal backward is the
document's chunked form (§C4) and its single reverse loop (§C3-§C1).
Needs torch and numpy (Debian's python3-torch); not run in CI.
"""
import sys

import numpy as np
import torch

EPS = 1e-6
LO, HI = -1.0, 1.0  # the default clamp bounds

# The worked example: N = S = 2 queries and keys, D = M = 1.
EXAMPLE = dict(Q=[[1.0], [-0.5]], K=[[1.0], [-1.0]], V=[[2.0], [-1.0]], G=[[1.0], [0.5]])


def normal_forward(Q, K, V, lo=LO, hi=HI, eps=EPS):
    """Every named intermediate of normal Flow-Attention (dict of tensors)."""
    N, S = Q.shape[0], K.shape[0]
    x = {"Q": Q, "K": K, "V": V}
    x["q"] = q = torch.sigmoid(Q)
    x["k"] = k = torch.sigmoid(K)
    x["k_sum"] = k_sum = k.sum(0)
    x["q_sum"] = q_sum = q.sum(0)
    x["u"] = u = ((q + eps) * (k_sum + eps)).sum(1)
    x["y"] = y = ((k + eps) * (q_sum + eps)).sum(1)
    x["I"] = I = 1 / u
    x["O"] = O = 1 / y
    x["k_outgoing"] = k_out = (O[:, None] * k).sum(0)
    x["q_incoming"] = q_in = (I[:, None] * q).sum(0)
    x["Ĩ"] = It = ((q + eps) * (k_out + eps)).sum(1)
    x["Ô"] = Oh = ((k + eps) * (q_in + eps)).sum(1)
    x["Õ"] = Ot = torch.clamp(Oh, lo, hi)
    x["A"] = A = torch.sigmoid(It * (N / S))
    x["C"] = C = S * torch.softmax(Ot, 0)
    x["W"] = W = C[:, None] * V
    x["KV"] = KV = k.T @ W
    x["R"] = R = q @ KV
    x["s"] = s = A * I
    x["out"] = s[:, None] * R
    return x


def normal_backward(v, G, lo=LO, hi=HI, eps=EPS):
    """The document's backward, §N4 -> §N0, from forward values v (numpy)."""
    q, k, V = v["q"], v["k"], v["V"]
    N, S = q.shape[0], k.shape[0]
    I, O, A, C, s = v["I"], v["O"], v["A"], v["C"], v["s"]
    g = {}
    # §N4
    g["out"] = G
    g["R"] = dR = s[:, None] * G
    g["s"] = ds = (G * v["R"]).sum(1)
    g["A"] = dA = ds * I
    dI = ds * A                                  # dI += ... follows in §N2
    paths = {}                                   # the five contributions to dq and to dk
    paths["q via R"] = dR @ v["KV"].T
    dq = paths["q via R"].copy()                 # dq += dR KVᵀ
    g["KV"] = dKV = q.T @ dR
    paths["k via KV"] = v["W"] @ dKV.T
    dk = paths["k via KV"].copy()                # dk += W dKVᵀ
    g["W"] = dW = k @ dKV
    g["V"] = C[:, None] * dW
    g["C"] = dC = (V * dW).sum(1)
    # §N3
    g["Ĩ"] = dIt = dA * A * (1 - A) * (N / S)
    p = C / S
    g["Õ"] = dOt = C * (dC - (p * dC).sum())
    # §N2
    g["Ô"] = dOh = dOt * ((v["Ô"] >= lo) & (v["Ô"] <= hi))
    paths["q via Ĩ"] = dIt[:, None] * (v["k_outgoing"] + eps)
    dq += paths["q via Ĩ"]
    g["k_outgoing"] = dko = (dIt[:, None] * (q + eps)).sum(0)
    g["O"] = dO = k @ dko
    paths["k via k_outgoing"] = O[:, None] * dko
    dk += paths["k via k_outgoing"]
    paths["k via Ô"] = dOh[:, None] * (v["q_incoming"] + eps)
    dk += paths["k via Ô"]
    g["q_incoming"] = dqi = (dOh[:, None] * (k + eps)).sum(0)
    dI += q @ dqi
    g["I"] = dI
    paths["q via q_incoming"] = I[:, None] * dqi
    dq += paths["q via q_incoming"]
    # §N1
    g["u"] = du = -I ** 2 * dI
    g["y"] = dy = -O ** 2 * dO
    paths["q via u"] = du[:, None] * (v["k_sum"] + eps)
    dq += paths["q via u"]
    g["k_sum"] = dks = (du[:, None] * (q + eps)).sum(0)
    paths["k via k_sum"] = np.broadcast_to(dks, k.shape)
    dk += dks
    paths["k via y"] = dy[:, None] * (v["q_sum"] + eps)
    dk += paths["k via y"]
    g["q_sum"] = dqs = (dy[:, None] * (k + eps)).sum(0)
    paths["q via q_sum"] = np.broadcast_to(dqs, q.shape)
    dq += dqs
    g["q"], g["k"] = dq, dk
    g["paths"] = paths
    # §N0
    g["Q"] = dq * q * (1 - q)
    g["K"] = dk * k * (1 - k)
    return g


def causal_forward(Q, K, V, lo=LO, hi=HI, eps=EPS):
    """Every named intermediate of causal Flow-Attention, the reference way
    (prefix sums, and all N prefix states H_i materialised)."""
    N = Q.shape[0]
    n = torch.arange(1, N + 1, dtype=Q.dtype)
    x = {"Q": Q, "K": K, "V": V}
    x["q"] = q = torch.sigmoid(Q)
    x["k"] = k = torch.sigmoid(K)
    x["k_sum"] = k_sum = k.cumsum(0)
    x["q_sum"] = q_sum = q.cumsum(0)
    x["I"] = I = n / ((q + eps) * (k_sum + eps)).sum(1)
    x["O"] = O = n / ((k + eps) * (q_sum + eps)).sum(1)
    x["k_outgoing"] = k_out = (O[:, None] * k).cumsum(0)
    x["q_incoming"] = q_in = (I[:, None] * q).cumsum(0)
    x["Ĩ"] = It = ((q + eps) * (k_out + eps)).sum(1) / n
    x["Ô"] = Oh = ((k + eps) * (q_in + eps)).sum(1) / n
    x["Õ"] = Ot = torch.clamp(Oh, lo, hi)
    x["A"] = A = torch.sigmoid(It)
    x["e"] = e = torch.exp(Ot)
    x["E"] = E = e.cumsum(0)
    x["C"] = C = n * e / E
    x["W"] = W = C[:, None] * V
    x["H"] = H = (k[:, :, None] * W[:, None, :]).cumsum(0)  # N×D×M
    x["R"] = R = torch.einsum("id,idm->im", q, H)
    x["s"] = s = A * I / n
    x["out"] = s[:, None] * R
    return x


LOWER = lambda c: np.tril(np.ones((c, c)))  # [r' <= r]
UPPER = lambda c: np.triu(np.ones((c, c)))  # [r' >= r]


def causal_chunked_out(v, c):
    """§C4 forward in chunks of c rows with one D×M state (four GEMMs a chunk)."""
    q, k, W, s = v["q"], v["k"], v["W"], v["s"]
    N, D, M = q.shape[0], q.shape[1], W.shape[1]
    H = np.zeros((D, M))  # prefix state: Σ over the rows before the chunk
    out = np.zeros((N, M))
    for t in range(0, N, c):
        sl = slice(t, min(t + c, N))
        b = sl.stop - sl.start
        R_c = q[sl] @ H + ((q[sl] @ k[sl].T) * LOWER(b)) @ W[sl]
        H = H + k[sl].T @ W[sl]
        out[sl] = s[sl, None] * R_c
    return out


def causal_backward(v, G, c, lo=LO, hi=HI, eps=EPS):
    """The document's causal backward: §C4 chunked, then §C3-§C1 in one
    reverse loop with the running suffix sums γ, ρ, τ, κ, π."""
    q, k, V, W = v["q"], v["k"], v["V"], v["W"]
    I, O, A, C, s, e, E = v["I"], v["O"], v["A"], v["C"], v["s"], v["e"], v["E"]
    N, D, M = q.shape[0], q.shape[1], V.shape[1]
    n = np.arange(1, N + 1, dtype=float)
    dq, dk, dW = np.zeros((N, D)), np.zeros((N, D)), np.zeros((N, M))
    dR, ds = np.zeros((N, M)), np.zeros(N)
    # §C4, forward sweep: R, ds, dR and dq with the prefix state H
    H = np.zeros((D, M))
    for t in range(0, N, c):
        sl = slice(t, min(t + c, N))
        b = sl.stop - sl.start
        R_c = q[sl] @ H + ((q[sl] @ k[sl].T) * LOWER(b)) @ W[sl]
        ds[sl] = (G[sl] * R_c).sum(1)
        dR[sl] = s[sl, None] * G[sl]
        dq[sl] += dR[sl] @ H.T + ((dR[sl] @ W[sl].T) * LOWER(b)) @ k[sl]
        H = H + k[sl].T @ W[sl]
    # §C4, backward sweep: dk and dW with the suffix state U
    U = np.zeros((D, M))  # Σ over the rows after the chunk of q_i ⊗ dR_i
    for t in reversed(range(0, N, c)):
        sl = slice(t, min(t + c, N))
        b = sl.stop - sl.start
        dk[sl] += W[sl] @ U.T + ((W[sl] @ dR[sl].T) * UPPER(b)) @ q[sl]
        dW[sl] = k[sl] @ U + ((k[sl] @ q[sl].T) * UPPER(b)) @ dR[sl]
        U = U + q[sl].T @ dR[sl]
    dV = C[:, None] * dW
    dC = (V * dW).sum(1)
    dA = ds * I / n
    dI = ds * A / n
    # §C3-§C1: one reverse loop
    gamma, rho, tau, kappa, pi = 0.0, np.zeros(D), np.zeros(D), np.zeros(D), np.zeros(D)
    for i in reversed(range(N)):
        dIt = dA[i] * A[i] * (1 - A[i])                              # §C3
        gamma += -dC[i] * C[i] / E[i]
        de = dC[i] * n[i] / E[i] + gamma
        dOh = de * e[i] * (lo <= v["Ô"][i] <= hi)                     # §C2 clamp
        dq[i] += dIt * (v["k_outgoing"][i] + eps) / n[i]             # §C2
        rho += dIt * (q[i] + eps) / n[i]
        dO = rho @ k[i]
        dk[i] += O[i] * rho
        dk[i] += dOh * (v["q_incoming"][i] + eps) / n[i]
        tau += dOh * (k[i] + eps) / n[i]
        dI[i] += tau @ q[i]
        dq[i] += I[i] * tau
        du = -dI[i] * I[i] ** 2 / n[i]                               # §C1
        dy = -dO * O[i] ** 2 / n[i]
        dq[i] += du * (v["k_sum"][i] + eps)
        kappa += du * (q[i] + eps)
        dk[i] += dy * (v["q_sum"][i] + eps)
        pi += dy * (k[i] + eps)
        dk[i] += kappa
        dq[i] += pi
    return {"Q": dq * q * (1 - q), "K": dk * k * (1 - k), "V": dV}


def with_autograd(forward, inputs, G, **options):
    leaves = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True)
              for name, value in inputs.items()}
    x = forward(leaves["Q"], leaves["K"], leaves["V"], **options)
    for name, t in x.items():
        if t.requires_grad and not t.is_leaf:
            t.retain_grad()
    loss = (torch.tensor(G, dtype=torch.float64) * x["out"]).sum()  # ℓ = Σ G ⊙ out
    loss.backward()
    values = {name: t.detach().numpy() for name, t in x.items()}
    grads = {name: t.grad.numpy() for name, t in x.items() if t.grad is not None}
    return values, grads, loss.item()


def agree(name, a, b, tol=1e-10):
    a, b = np.asarray(a, float), np.asarray(b, float)
    err = np.max(np.abs(a - b) / (1 + np.abs(b)), initial=0.0)
    if not err <= tol:
        sys.exit(f"MISMATCH {name}: document {a.ravel()} vs autograd {b.ravel()}")


def check_normal(inputs, **options):
    values, grads, _ = with_autograd(normal_forward, inputs, inputs["G"], **options)
    mine = normal_backward(values, np.array(inputs["G"], float), **options)
    for name, grad in grads.items():
        agree("d" + name, mine[name], grad)
    for x in "qk":  # the five paths add up to the total
        agree("paths of d" + x, sum(p for n, p in mine["paths"].items() if n[0] == x), grads[x])
    return values, grads, mine["paths"]


def check_causal(inputs, c):
    values, grads, _ = with_autograd(causal_forward, inputs, inputs["G"])
    agree("chunked out", causal_chunked_out(values, c), values["out"])
    mine = causal_backward(values, np.array(inputs["G"], float), c)
    for name in ("Q", "K", "V"):
        agree("d" + name + " (causal)", mine[name], grads[name])
    return values


def fmt(x):
    return f"{x:.6g}" if x != 0 else "0"


def print_example():
    values, grads, paths = check_normal(EXAMPLE)
    N, S = len(EXAMPLE["Q"]), len(EXAMPLE["K"])
    print(f"Worked example: N = S = 2, D = M = 1, eps = {EPS:g}, clamp [{LO:g}, {HI:g}], "
          f"loss ℓ = Σ G ⊙ out = {float((np.array(EXAMPLE['G']) * values['out']).sum()):.6g}")
    print(f"Σ_j Ô_j = {values['Ô'].sum():.9f} (≈ N = {N}),  Σ_i Ĩ_i = {values['Ĩ'].sum():.9f} (≈ S = {S})")
    print("clamped:", [j for j in range(S) if not LO <= values["Ô"][j] <= HI])
    print()
    print("| quantity | value [0] | value [1] | gradient [0] | gradient [1] |")
    print("|---|---|---|---|---|")
    order = ["Q", "K", "V", "q", "k", "k_sum", "q_sum", "u", "y", "I", "O", "k_outgoing",
             "q_incoming", "Ĩ", "Ô", "Õ", "A", "C", "W", "KV", "R", "s", "out"]
    for name in order:
        val, grad = values[name].ravel(), grads[name].ravel()
        cells = [fmt(val[0]), fmt(val[1]) if val.size > 1 else "",
                 fmt(grad[0]), fmt(grad[1]) if grad.size > 1 else ""]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| path of dq | i = 0 | i = 1 | | path of dk | j = 0 | j = 1 |")
    print("|---|---|---|---|---|---|---|")
    q_paths = ["q via R", "q via Ĩ", "q via q_incoming", "q via u", "q via q_sum"]
    k_paths = ["k via KV", "k via Ô", "k via k_outgoing", "k via y", "k via k_sum"]  # mirrors
    for qn, kn in zip(q_paths, k_paths):
        qv, kv = paths[qn].ravel(), paths[kn].ravel()
        print(f"| {qn[2:]} | {fmt(qv[0])} | {fmt(qv[1])} | | {kn[2:]} | {fmt(kv[0])} | {fmt(kv[1])} |")
    print(f"| total dq | {fmt(grads['q'][0, 0])} | {fmt(grads['q'][1, 0])} | | total dk | "
          f"{fmt(grads['k'][0, 0])} | {fmt(grads['k'][1, 0])} |")


def random_checks():
    gen = np.random.default_rng(0)
    clamped = 0
    for trial in range(20):
        N, S, D, M = gen.integers(1, 7, size=4)
        inputs = {"Q": gen.normal(size=(N, D)) * 2, "K": gen.normal(size=(S, D)) * 2,
                  "V": gen.normal(size=(S, M)), "G": gen.normal(size=(N, M))}
        lo, hi = (-1.0, 1.0) if trial % 2 == 0 else (0.3, 0.9)  # other bounds too
        values, _, _ = check_normal(inputs, lo=lo, hi=hi)
        clamped += int(np.sum((values["Ô"] < lo) | (values["Ô"] > hi)))
        assert np.all(values["Ô"] > 0) and np.all(values["Ĩ"] > 0)
        assert np.all((values["A"] > 0.5) & (values["A"] < 1))
        assert abs(values["Ô"].sum() - N) < 1e-4 and abs(values["Ĩ"].sum() - S) < 1e-4
    for trial in range(20):
        N, D, M = gen.integers(1, 12), gen.integers(1, 5), gen.integers(1, 5)
        c = int(gen.integers(1, N + 1))
        inputs = {"Q": gen.normal(size=(N, D)) * 2, "K": gen.normal(size=(N, D)) * 2,
                  "V": gen.normal(size=(N, M)), "G": gen.normal(size=(N, M))}
        values = check_causal(inputs, c)
        assert np.all(values["Ô"] > 0) and np.all(values["Ĩ"] > 0)
    print(f"random checks passed: 20 normal heads ({clamped} clamped entries), "
          "20 causal heads (chunked §C4, merged reverse loop)")


if __name__ == "__main__":
    print_example()
    if "--check" in sys.argv[1:]:
        random_checks()
