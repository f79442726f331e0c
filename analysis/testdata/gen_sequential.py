#!/usr/bin/python3
"""Reference e-values for analysis/sequential_test.go (statistics.md §4).

Run with Debian's python3-scipy:  /usr/bin/python3 gen_sequential.py > sequential.json
Closed forms use scipy.special.betaln / betainc; the δ-grid mixture is
recomputed here independently with numpy/scipy.special.logsumexp.
"""
import json
import math

import numpy as np
import scipy
from scipy.special import betaln, betainc, logsumexp


def conditional(cx, cy, rho, kappa, one_sided):
    a, b = kappa * rho, kappa * (1 - rho)
    l = betaln(a + cx, b + cy) - betaln(a, b) - cx * math.log(rho) - cy * math.log1p(-rho)
    if one_sided:
        # 1 - I_rho(a, b) = I_{1-rho}(b, a)
        l += math.log(betainc(b + cy, a + cx, 1 - rho)) - math.log(betainc(b, a, 1 - rho))
    return l


def grid(alt, null_ratio, batches):
    n, span = 64, 3.0
    if alt == "greater":
        d = span * np.arange(1, n + 1) / n
    elif alt == "less":
        d = -span * np.arange(1, n + 1) / n
    else:
        k = span * np.arange(1, n // 2 + 1) / (n // 2)
        d = np.ravel(np.column_stack([-k, k]))
    logw = -d * d / 2
    logw -= logsumexp(logw)
    d0 = math.log(null_ratio)
    d = d + d0
    ll = np.zeros_like(d)
    for ex, ey, rho in batches:
        lo = math.log(rho / (1 - rho))
        th = 1 / (1 + np.exp(-(lo + d)))
        th0 = 1 / (1 + math.exp(-(lo + d0)))
        ll += ex * (np.log(th) - math.log(th0)) + ey * (np.log1p(-th) - math.log1p(-th0))
    return float(logsumexp(logw + ll))


def bins(kappa, batches):
    """batches: list of (canary bin counts dict, baseline bin counts dict, rho)."""
    rho0 = batches[0][2]
    a, b = kappa * rho0, kappa * (1 - rho0)
    nx, ny, lognull = {}, {}, 0.0
    for bx, by, rho in batches:
        for k in set(bx) | set(by):
            x, y = bx.get(k, 0), by.get(k, 0)
            nx[k] = nx.get(k, 0) + x
            ny[k] = ny.get(k, 0) + y
            lognull += x * math.log(rho) + y * math.log1p(-rho)
    s = sum(betaln(a + nx[k], b + ny[k]) - betaln(a, b) for k in nx)
    return s - lognull


closed = []
for cx, cy, rho, kappa in [(30, 40, 0.25, 100), (10, 90, 0.1, 100), (0, 0, 0.05, 100),
                           (5, 20, 0.05, 90), (120, 2000, 0.05, 100), (3, 1, 0.5, 10),
                           (400, 300, 0.3, 10000), (1, 500, 0.2, 100)]:
    closed.append({"cx": cx, "cy": cy, "rho": rho, "kappa": kappa,
                   "log_e_two_sided": conditional(cx, cy, rho, kappa, False),
                   "log_e_greater": conditional(cx, cy, rho, kappa, True)})

grids = []
for alt, r, batches in [
    ("greater", 1.0, [(3, 20, 0.05), (5, 30, 0.1), (12, 40, 0.25)]),
    ("two-sided", 1.0, [(3, 20, 0.05), (5, 30, 0.1), (12, 40, 0.25)]),
    ("less", 1.0, [(0, 50, 0.1), (1, 80, 0.2)]),
    ("greater", 1.5, [(30, 100, 0.2), (25, 70, 0.2)]),
    ("less", 1.2, [(100, 1000, 0.1), (80, 900, 0.1)]),
]:
    grids.append({"alt": alt, "null_ratio": r,
                  "batches": [{"canary": a, "baseline": b, "rho": p} for a, b, p in batches],
                  "log_e": grid(alt, r, batches)})

# Latencies in microseconds; the Go test records each value once, its bin is
# floor(2*log2(v)) (all values chosen away from bin and bucket edges).
lat_batches = [
    ([900] * 30 + [2100] * 10, [900] * 300 + [2100] * 60 + [5000] * 5, 0.1),
    ([900] * 20 + [5000] * 15, [900] * 150 + [2100] * 40, 0.2),
]


def tobins(vals):
    out = {}
    for v in vals:
        k = int(math.floor(2 * math.log2(v)))
        out[k] = out.get(k, 0) + 1
    return out


latency = {"kappa": 100,
           "batches": [{"canary": x, "baseline": y, "rho": r} for x, y, r in lat_batches],
           "log_e": bins(100, [(tobins(x), tobins(y), r) for x, y, r in lat_batches])}

json.dump({"generator": "gen_sequential.py", "scipy": scipy.__version__, "numpy": np.__version__,
           "closed_form": closed, "grid": grids, "latency_bins": latency}, __import__("sys").stdout, indent=1)
print()
