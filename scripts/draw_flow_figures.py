#!/usr/bin/env python3
"""Draws the two figures of docs/flow-attention-gradients.md as SVG.

    python3 scripts/draw_flow_figures.py [OUTPUT_DIR]     (default: docs/figures)

writes flow-network.svg (the flow network that names the quantities) and
computation-graph.svg (normal Flow-Attention as a graph, every edge labelled
with its local derivative). Standard library only; the layouts are laid out
by hand, and the script refuses to write a figure whose labels overlap each
other or a node.
"""
import math
import os
import sys
from html import escape

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
CHAR_WIDTH = 0.62  # average advance of the font, in font sizes (an upper estimate)

# Fill colours by stage (the section marks of the document).
STAGE_COLOURS = {
    "input": "#e8e8e8", "N0": "#cfe2ff", "N1": "#d5f0d5", "N2": "#fff1b8",
    "N3": "#ffd8b0", "N4": "#e6d5f5",
}
STAGE_NAMES = {
    "input": "input", "N0": "§N0 feature map", "N1": "§N1 flows", "N2": "§N2 conservation",
    "N3": "§N3 allocation, competition", "N4": "§N4 aggregation",
}


def text_width(text, size):
    return len(text) * size * CHAR_WIDTH


class Box:
    def __init__(self, x0, y0, x1, y1, what):
        self.x0, self.y0, self.x1, self.y1, self.what = x0, y0, x1, y1, what

    def overlaps(self, other, gap=2.0):
        return not (self.x1 + gap <= other.x0 or other.x1 + gap <= self.x0 or
                    self.y1 + gap <= other.y0 or other.y1 + gap <= self.y0)


class Svg:
    def __init__(self, width, height):
        self.width, self.height = width, height
        self.parts = []
        self.boxes = []  # labels and nodes, for the overlap check

    def add(self, element):
        self.parts.append(element)

    def text(self, x, y, content, size=14, anchor="middle", weight="normal", fill="#222",
             style="normal", check=True):
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" font-style="{style}" fill="{fill}" '
                 f'dominant-baseline="central">{escape(content)}</text>')
        if check:
            w = text_width(content, size)
            x0 = {"middle": x - w / 2, "start": x, "end": x - w}[anchor]
            self.boxes.append(Box(x0, y - size * 0.6, x0 + w, y + size * 0.6, content))

    def label(self, x, y, content, size=13, fill="#7a1f1f"):
        """A text on a white pad, for edge labels (hides the line under it)."""
        w, h = text_width(content, size) + 6, size + 6
        self.add(f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" '
                 f'rx="3" fill="white" fill-opacity="0.92"/>')
        self.text(x, y, content, size=size, fill=fill, check=False)
        self.boxes.append(Box(x - w / 2, y - h / 2, x + w / 2, y + h / 2, "label " + content))

    def check_overlaps(self, name):
        bad = [(a.what, b.what) for n, a in enumerate(self.boxes) for b in self.boxes[n + 1:]
               if a.overlaps(b) and not (a.what.startswith("node ") and b.what.startswith("node "))]
        # A node's own text lies inside the node: that is not an overlap.
        bad = [(a, b) for a, b in bad if not (a.startswith("node ") and b == a[5:]) and
               not (b.startswith("node ") and a == b[5:])]
        if bad:
            sys.exit(f"{name}: overlapping labels: {bad}")

    def write(self, path):
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" font-family="{FONT}">\n'
                '<defs>\n'
                '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
                'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto">'
                '<path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker>\n'
                '<marker id="arrow-flow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="13" '
                'markerHeight="13" markerUnits="userSpaceOnUse" orient="auto">'
                '<path d="M0,0 L10,5 L0,10 z" fill="#3a6ea5"/></marker>\n'
                '</defs>\n'
                f'<rect width="{self.width}" height="{self.height}" fill="white"/>\n')
        with open(path, "w", encoding="utf-8") as f:
            f.write(head + "\n".join(self.parts) + "\n</svg>\n")


# ---------------------------------------------------------------------------
# Figure 1: the flow network
# ---------------------------------------------------------------------------

# Three sinks (queries) and three sources (keys), features in D = 2. The
# capacities q_i·k_j and every number in the figure come from these (ε is
# left out: it only moves the numbers in the sixth digit).
SINK_FEATURES = [(0.9, 0.2), (0.5, 0.5), (0.1, 0.8)]    # q_0, q_1, q_2
SOURCE_FEATURES = [(0.8, 0.3), (0.4, 0.4), (0.2, 0.9)]  # k_0, k_1, k_2
SUB = "₀₁₂₃₄₅₆₇₈₉"


def flow_numbers():
    cap = [[sum(a * b for a, b in zip(q, k)) for k in SOURCE_FEATURES] for q in SINK_FEATURES]
    u = [sum(row) for row in cap]                                        # incoming flow of sink i
    y = [sum(cap[i][j] for i in range(len(cap))) for j in range(len(cap[0]))]  # outgoing of source j
    conserved_sink = [sum(cap[i][j] / y[j] for j in range(len(y))) for i in range(len(u))]
    conserved_source = [sum(cap[i][j] / u[i] for i in range(len(u))) for j in range(len(y))]
    return cap, u, y, conserved_sink, conserved_source


def draw_flow_network(path):
    cap, u, y, It, Oh = flow_numbers()
    N, S = len(u), len(y)
    svg = Svg(1380, 600)
    svg.text(690, 28, "Flow-Attention as a flow network (one head; here N = S = 3, D = 2)",
             size=19, weight="bold")
    svg.text(690, 54, "sources = keys k_j (they carry the values v_j)   →   sinks = queries q_i "
             "(they receive out_i);   edge j → i has capacity q_i·k_j", size=14, fill="#444")
    panels = [
        ("1. Raw flows", "capacity q_i·k_j",
         lambda i, j: cap[i][j]),
        ("2. Sources conserved: each sends exactly 1", "flow O_j·(q_i·k_j)",
         lambda i, j: cap[i][j] / y[j]),
        ("3. Sinks conserved: each receives exactly 1", "flow I_i·(q_i·k_j)",
         lambda i, j: cap[i][j] / u[i]),
    ]
    top, step, radius = 188, 93, 24
    for p, (title, edge_text, flow) in enumerate(panels):
        px = 30 + p * 450
        svg.add(f'<rect x="{px}" y="80" width="420" height="440" rx="10" fill="#fafafa" '
                f'stroke="#bbb"/>')
        svg.text(px + 210, 104, title, size=15, weight="bold")
        svg.text(px + 210, 126, "edge width ∝ " + edge_text, size=13, fill="#555")
        sx, kx = px + 95, px + 325  # sources left, sinks right
        for j in range(S):
            for i in range(N):
                y0, y1 = top + j * step, top + i * step
                width = 1.0 + 7.0 * flow(i, j)
                dx, dy = kx - sx, y1 - y0
                length = math.hypot(dx, dy)
                ux, uy = dx / length, dy / length
                a = (sx + ux * (radius + 2), y0 + uy * (radius + 2))
                b = (kx - ux * (radius + 3), y1 - uy * (radius + 3))
                svg.add(f'<line x1="{a[0]:.1f}" y1="{a[1]:.1f}" x2="{b[0]:.1f}" y2="{b[1]:.1f}" '
                        f'stroke="#3a6ea5" stroke-opacity="0.75" stroke-width="{width:.2f}" '
                        f'marker-end="url(#arrow-flow)"/>')
        for j in range(S):
            cy = top + j * step
            svg.add(f'<circle cx="{sx}" cy="{cy}" r="{radius}" fill="{STAGE_COLOURS["N0"]}" '
                    f'stroke="#333" stroke-width="1.5"/>')
            svg.text(sx, cy, "k" + SUB[j], size=16, weight="bold")
            if p == 0:
                svg.text(sx - radius - 8, cy, f"y{SUB[j]}={y[j]:.2f}", size=12, anchor="end",
                         fill="#1d5c1d")
            if p == 2:
                svg.text(sx - radius - 8, cy, f"Ô{SUB[j]}={Oh[j]:.2f}", size=13, anchor="end",
                         fill="#8a3b00", weight="bold")
        for i in range(N):
            cy = top + i * step
            svg.add(f'<circle cx="{kx}" cy="{cy}" r="{radius}" fill="{STAGE_COLOURS["N0"]}" '
                    f'stroke="#333" stroke-width="1.5"/>')
            svg.text(kx, cy, "q" + SUB[i], size=16, weight="bold")
            if p == 0:
                svg.text(kx + radius + 8, cy, f"u{SUB[i]}={u[i]:.2f}", size=12, anchor="start",
                         fill="#1d5c1d")
            if p == 1:
                svg.text(kx + radius + 8, cy, f"Ĩ{SUB[i]}={It[i]:.2f}", size=13, anchor="start",
                         fill="#8a3b00", weight="bold")
        svg.text(sx, top - 38, "sources", size=13, fill="#555")
        svg.text(kx, top - 38, "sinks", size=13, fill="#555")
        notes = {
            0: ["incoming flow of sink i:  u_i = q_i·k_sum",
                "outgoing flow of source j:  y_j = k_j·q_sum",
                "code keeps the reciprocals:",
                "I_i = 1/u_i (sink_incoming)",
                "O_j = 1/y_j (source_outgoing)"],
            1: ["sink i now receives  Ĩ_i = q_i·k_outgoing,",
                "k_outgoing = Σ_j O_j k_j;   Σ_i Ĩ_i = S",
                f"({It[0]:.2f} + {It[1]:.2f} + {It[2]:.2f} = {sum(It):.2f})",
                "→ allocation of sink i:",
                "A_i = σ(Ĩ_i·N/S)"],
            2: ["source j now sends  Ô_j = k_j·q_incoming,",
                "q_incoming = Σ_i I_i q_i;   Σ_j Ô_j = N",
                f"({Oh[0]:.2f} + {Oh[1]:.2f} + {Oh[2]:.2f} = {sum(Oh):.2f}; "
                + ", ".join(f"Ô{SUB[j]}" for j in range(S) if Oh[j] > 1) + " clamped to 1)",
                "→ competition of source j:",
                "C = S·softmax(Õ),  Õ = clamp(Ô, −1, 1)"],
        }[p]
        for n, line in enumerate(notes):
            svg.text(px + 210, 425 + n * 20, line, size=13)
    svg.text(690, 545, "output:  out_i = A_i · I_i · Σ_j (q_i·k_j) C_j v_j   — each sink's "
             "inflow normalised to 1 (I_i), sources re-weighted by competition (C_j), sinks "
             "gated by allocation (A_i)", size=13)
    svg.text(690, 572, "ε is left out of the numbers; the conservation sums hold exactly for "
             "ε = 0 and to about ε for ε = 1e-6", size=12, fill="#666")
    svg.check_overlaps(path)
    svg.write(path)


# ---------------------------------------------------------------------------
# Figure 2: the computation graph of normal Flow-Attention
# ---------------------------------------------------------------------------

ROW = {"lane_top": 44, "lane_mid": 92, "A": 140, "B": 280, "C": 420, "D": 560, "E": 690, "lane_bottom": 770}
NODES = {  # name: (x, row, stage)
    "Q": (70, "A", "input"), "K": (70, "D", "input"), "V": (1340, "E", "input"),
    "q": (210, "A", "N0"), "k": (210, "D", "N0"),
    "k_sum": (390, "B", "N1"), "q_sum": (390, "C", "N1"),
    "I": (560, "B", "N1"), "O": (560, "C", "N1"),
    "q_incoming": (745, "B", "N2"), "k_outgoing": (745, "C", "N2"),
    "Ĩ": (930, "A", "N2"), "Ô": (930, "D", "N2"), "Õ": (1060, "D", "N2"),
    "A": (1060, "A", "N3"), "C": (1190, "D", "N3"),
    "s": (1190, "A", "N4"), "W": (1340, "D", "N4"), "KV": (1340, "C", "N4"),
    "R": (1340, "B", "N4"), "out": (1340, "A", "N4"),
}
# (parent, child, local derivative ∂child/∂parent, label position t along
# the edge, optional control point of a curved edge or waypoints of a lane).
EDGES = [
    ("Q", "q", "q(1−q)", 0.5, None),
    ("K", "k", "k(1−k)", 0.5, None),
    ("k", "k_sum", "1", 0.22, None),
    ("q", "q_sum", "1", 0.22, None),
    ("q", "I", "−I²(k_sum+ε)", 0.62, None),
    ("k_sum", "I", "−I²(q_i+ε)", 0.5, None),
    ("k", "O", "−O²(q_sum+ε)", 0.62, None),
    ("q_sum", "O", "−O²(k_j+ε)", 0.5, None),
    ("I", "q_incoming", "q_i", 0.5, None),
    ("q", "q_incoming", "I_i", 0.75, {"curve": (640, 175)}),
    ("O", "k_outgoing", "k_j", 0.5, None),
    ("k", "k_outgoing", "O_j", 0.75, {"curve": (640, 525)}),
    ("k_outgoing", "Ĩ", "q_i+ε", 0.72, None),
    ("q", "Ĩ", "k_outgoing+ε", 0.4, None),
    ("q_incoming", "Ô", "k_j+ε", 0.72, None),
    ("k", "Ô", "q_incoming+ε", 0.4, None),
    ("Ô", "Õ", "[lo≤Ô≤hi]", 0.5, ("below",)),
    ("Ĩ", "A", "A(1−A)·N/S", 0.5, ("below",)),
    ("Õ", "C", "C_j′(δ_jj′−p_j)", 0.5, ("below",)),
    ("A", "s", "I_i", 0.5, None),
    ("I", "s", "A_i", 0.5, {"lane": [(560, ROW["lane_mid"]), (1190, ROW["lane_mid"])],
                            "label_at": (1000, ROW["lane_mid"])}),
    ("C", "W", "v_j", 0.5, None),
    ("V", "W", "C_j", 0.5, None),
    ("W", "KV", "k_j", 0.5, None),
    ("KV", "R", "q_i", 0.5, None),
    ("R", "out", "s_i", 0.5, None),
    ("s", "out", "R_i", 0.5, None),
    ("q", "R", "KVᵀ", 0.5, {"lane": [(210, ROW["lane_top"]), (1450, ROW["lane_top"]),
                                     (1450, ROW["B"])], "label_at": (800, ROW["lane_top"])}),
    ("k", "KV", "W_j", 0.5, {"lane": [(210, ROW["lane_bottom"]), (1450, ROW["lane_bottom"]),
                                      (1450, ROW["C"])], "label_at": (800, ROW["lane_bottom"])}),
]


def node_box(name):
    x, row, _ = NODES[name]
    y = ROW[row]
    w = max(44, text_width(name, 17) + 22)
    return x - w / 2, y - 19, x + w / 2, y + 19


def clip_to_box(inside, outside, box, margin=3.0):
    """The point where the segment from `inside` (in the box) to `outside` leaves it."""
    (x0, y0, x1, y1) = box
    x0, y0, x1, y1 = x0 - margin, y0 - margin, x1 + margin, y1 + margin
    dx, dy = outside[0] - inside[0], outside[1] - inside[1]
    t = 1.0
    for edge, d, origin in ((x0, dx, inside[0]), (x1, dx, inside[0]), (y0, dy, inside[1]),
                            (y1, dy, inside[1])):
        if d != 0:
            s = (edge - origin) / d
            if 0 < s < t:
                t = s
    return inside[0] + t * dx, inside[1] + t * dy


def quad_point(p0, p1, p2, t):
    return ((1 - t) ** 2 * p0[0] + 2 * t * (1 - t) * p1[0] + t * t * p2[0],
            (1 - t) ** 2 * p0[1] + 2 * t * (1 - t) * p1[1] + t * t * p2[1])


def draw_computation_graph(path):
    svg = Svg(1520, 870)
    centres = {n: (x, ROW[row]) for n, (x, row, _) in NODES.items()}
    stroke = 'stroke="#444" stroke-width="1.6" fill="none" marker-end="url(#arrow)"'
    labels = []
    for parent, child, derivative, t, shape in EDGES:
        a, b = centres[parent], centres[child]
        if isinstance(shape, dict) and "lane" in shape:
            points = [a] + shape["lane"] + [b]
            start = clip_to_box(a, points[1], node_box(parent))
            end = clip_to_box(b, points[-2], node_box(child))
            pts = [start] + shape["lane"] + [end]
            d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
            for n in range(1, len(pts) - 1):  # rounded corners
                prev, corner, nxt = pts[n - 1], pts[n], pts[n + 1]
                r = 14
                def towards(p, q, dist):
                    length = math.hypot(q[0] - p[0], q[1] - p[1])
                    return p[0] + (q[0] - p[0]) * dist / length, p[1] + (q[1] - p[1]) * dist / length
                c0, c1 = towards(corner, prev, r), towards(corner, nxt, r)
                d += f" L{c0[0]:.1f},{c0[1]:.1f} Q{corner[0]:.1f},{corner[1]:.1f} {c1[0]:.1f},{c1[1]:.1f}"
            d += f" L{pts[-1][0]:.1f},{pts[-1][1]:.1f}"
            svg.add(f'<path d="{d}" {stroke}/>')
            labels.append((shape["label_at"], derivative))
        elif isinstance(shape, dict) and "curve" in shape:
            ctrl = shape["curve"]
            start = clip_to_box(a, ctrl, node_box(parent))
            end = clip_to_box(b, ctrl, node_box(child))
            svg.add(f'<path d="M{start[0]:.1f},{start[1]:.1f} Q{ctrl[0]},{ctrl[1]} '
                    f'{end[0]:.1f},{end[1]:.1f}" {stroke}/>')
            labels.append((quad_point(start, ctrl, end, t), derivative))
        else:
            start = clip_to_box(a, b, node_box(parent))
            end = clip_to_box(b, a, node_box(child))
            svg.add(f'<line x1="{start[0]:.1f}" y1="{start[1]:.1f}" x2="{end[0]:.1f}" '
                    f'y2="{end[1]:.1f}" {stroke}/>')
            at = (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
            if shape == ("below",):  # short horizontal edge: label under it
                at = (at[0], at[1] + 36)
            labels.append((at, derivative))
    for name, (x, row, stage) in NODES.items():
        x0, y0, x1, y1 = node_box(name)
        svg.add(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" '
                f'rx="9" fill="{STAGE_COLOURS[stage]}" stroke="#333" stroke-width="1.4"/>')
        svg.text(x, ROW[row] + 1.5, name, size=17, weight="bold")
        svg.boxes.append(Box(x0, y0, x1, y1, "node " + name))
    for (x, y), derivative in labels:
        svg.label(x, y, derivative)
    # Legend
    svg.text(20, 815, "Normal Flow-Attention, one head. Arrows run forward (parent → child); "
             "each label is the local derivative ∂child/∂parent, so the backward multiplies "
             "along every path from out back to an input and adds the paths (dx += ...).",
             size=13, anchor="start")
    svg.text(20, 840, "q and k each feed five nodes; gradients: i indexes queries (sinks), "
             "j keys (sources); p = C/S, δ the Kronecker delta, [..] is 1 where true.",
             size=13, anchor="start")
    x = 20
    for stage, colour in STAGE_COLOURS.items():
        svg.add(f'<rect x="{x}" y="852" width="16" height="12" fill="{colour}" stroke="#333"/>')
        svg.text(x + 22, 858, STAGE_NAMES[stage], size=12, anchor="start", check=False)
        x += 40 + text_width(STAGE_NAMES[stage], 12)
    svg.check_overlaps(path)
    svg.write(path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "docs", "figures")
    os.makedirs(out_dir, exist_ok=True)
    for name, draw in (("flow-network.svg", draw_flow_network),
                       ("computation-graph.svg", draw_computation_graph)):
        target = os.path.join(out_dir, name)
        draw(target)
        print("wrote", os.path.relpath(target))


if __name__ == "__main__":
    main()
