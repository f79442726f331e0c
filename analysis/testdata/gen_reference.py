#!/usr/bin/python3
"""Writes analysis/testdata/reference.json: reference values for Guardian's
fixed-horizon statistics, computed by Debian's scipy and statsmodels.

Run with Debian's interpreter (`make fixtures`, i.e. /usr/bin/python3 with
python3-scipy 1.10.1 and python3-statsmodels 0.13.5). The output is
deterministic for a given library version: every sample comes from a seeded
numpy Generator. Conventions match the Go package: x = canary, y = baseline.
"""

import json
import math
import os
import platform
import sys

import numpy as np
import scipy
import statsmodels
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json")
ALTS = ["two-sided", "greater", "less"]
rng = np.random.default_rng(20260525)


def num(v):
    """JSON has no NaN/Inf: spell them as strings."""
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def values(a):
    """Integers print as integers to keep the file small."""
    a = np.asarray(a, dtype=float)
    return [int(v) if v == int(v) and abs(v) < 2**53 else float(v) for v in a]


# ---------------------------------------------------------------- MWU samples
def mwu_pairs():
    """(name, x, y) pairs covering ties, unequal sizes, tiny and large n."""
    out = []
    for m, n in [(1, 1), (1, 2), (2, 1), (1, 3), (3, 3), (2, 5), (3, 1)]:
        for rep in range(3):
            out.append((f"tiny m={m} n={n} #{rep}", rng.normal(size=m), rng.normal(size=n)))
    out.append(("tiny tied m=2 n=2", [1.0, 2.0], [2.0, 3.0]))
    out.append(("tiny tied m=1 n=3", [2.0], [2.0, 2.0, 1.0]))
    out.append(("all tied but one", [5.0, 5.0, 5.0], [5.0, 5.0, 6.0]))
    out.append(("statistics.md hist check", [1, 2, 2, 3, 3, 3, 4], [2, 3, 3, 4, 4, 5]))
    for rep in range(25):
        m, n = rng.integers(5, 60, size=2)
        shift = rng.choice([0.0, 0.2, 0.5, 1.0])
        out.append((f"normal m={m} n={n} shift={shift}", rng.normal(shift, 1, m), rng.normal(0, 1, n)))
    for rep in range(20):
        m, n = rng.integers(4, 80, size=2)
        k = int(rng.integers(2, 6))
        out.append((f"ties k={k} m={m} n={n}", rng.integers(0, k, m), rng.integers(0, k, n)))
    for rep in range(10):
        m, n = rng.integers(20, 300, size=2)
        x = np.round(rng.lognormal(3.0, 0.6, m), 1)
        y = np.round(rng.lognormal(2.9, 0.6, n), 1)
        out.append((f"lognormal rounded m={m} n={n}", x, y))
    # Heavy ties: almost everything in a couple of values.
    out.append(("heavy ties", [1] * 40 + [2] * 3, [1] * 55 + [2] * 1 + [3]))
    # Large n: integer and 2-decimal data keep the file small.
    out.append(("large n=5000 ints", rng.poisson(200, 5000), rng.poisson(199, 4800)))
    out.append(("large n=5000 lognormal", np.round(rng.lognormal(4, 0.5, 5000), 2),
                np.round(rng.lognormal(4.01, 0.5, 5000), 2)))
    out.append(("far apart", rng.normal(100, 1, 200), rng.normal(0, 1, 200)))
    return out


def hl_reference(x, y, conf=0.95):
    """Median of all pairwise differences (numpy) and the asymptotic order
    statistic CI by brute-force sorting, for the non-exact branch of
    HodgesLehmann (ties present, or a sample of 50 or more)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    m, n = len(x), len(y)
    d = np.sort((x[:, None] - y[None, :]).ravel())
    est = float(np.median(d))
    pooled = np.concatenate([x, y])
    exact_branch = len(np.unique(pooled)) == m + n and m < 50 and n < 50
    if exact_branch:
        return est, None
    N = m + n
    ties = sum(float(t) ** 3 - t for s in (x, y) for t in np.unique(s, return_counts=True)[1])
    sigma = math.sqrt(max(0.0, m * n / 12 * ((N + 1) - ties / (N * (N - 1)))))
    z = stats.norm.ppf(1 - (1 - conf) / 2)
    klo = min(max(math.floor(m * n / 2 - 0.5 - z * sigma) + 1, 1), m * n)
    khi = min(max(math.floor(m * n / 2 + 0.5 + z * sigma) + 1, 1), m * n)
    return est, [float(d[klo - 1]), float(d[khi - 1])]


def mwu_cases():
    cases = []
    for name, x, y in mwu_pairs():
        x, y = np.asarray(x, float), np.asarray(y, float)
        est, ci = (None, None)
        if len(x) * len(y) <= 2_000_000:
            est, ci = hl_reference(x, y)
        c = {"name": name, "x": values(x), "y": values(y), "alternatives": {}}
        for alt in ALTS:
            r = stats.mannwhitneyu(x, y, alternative=alt, method="asymptotic", use_continuity=True)
            c["alternatives"][alt] = {"statistic": float(r.statistic), "p_value": float(r.pvalue)}
        if est is not None:
            c["hodges_lehmann"] = est
            if ci is not None:
                c["ci95"] = ci
        cases.append(c)
    return cases


def mwu_exact_cases():
    cases = []
    sizes = [(1, 1), (1, 5), (2, 2), (3, 4), (5, 4), (6, 6), (8, 3), (10, 12), (20, 15), (30, 30), (50, 40), (60, 60)]
    for m, n in sizes:
        for shift in (0.0, 0.8):
            x = rng.normal(shift, 1, m)
            y = rng.normal(0, 1, n)
            c = {"name": f"exact m={m} n={n} shift={shift}", "x": values(x), "y": values(y), "alternatives": {}}
            for alt in ALTS:
                r = stats.mannwhitneyu(x, y, alternative=alt, method="exact")
                c["alternatives"][alt] = {"statistic": float(r.statistic), "p_value": float(r.pvalue)}
            cases.append(c)
    return cases


# ------------------------------------------------- MWU from HdrHistograms
# Mirrors hdrhistogram-go's bucket map for NewLatencyHistogram's geometry
# (lowest 1, 3 significant figures): a value stands for the middle of its
# bucket. The Go test records the raw values into real histograms; it checks
# its own index → value map against the library separately.
SUB_HALF_MAG = 10  # ceil(log2(2·10³)) − 1
SUB_HALF = 1 << SUB_HALF_MAG


def hdr_representative(v):
    v = int(v)
    pow2ceil = (v | (2 * SUB_HALF - 1)).bit_length()
    bucket = pow2ceil - (SUB_HALF_MAG + 1)
    sub = v >> bucket
    lowest = sub << bucket
    return lowest + ((1 << bucket) >> 1)


def mwu_hist_cases():
    cases = []
    # Values below 2048 are recorded exactly.
    for rep in range(6):
        m, n = rng.integers(30, 400, size=2)
        x = rng.integers(1, 2048, m)
        y = rng.integers(1, 2048, n)
        cases.append(("exact range", x, y))
    for rep in range(4):
        m, n = rng.integers(50, 500, size=2)
        cases.append(("exact range narrow", rng.integers(100, 110, m), rng.integers(101, 111, n)))
    # Latencies in microseconds, well past 2048: buckets are 2..4096 wide.
    for rep in range(8):
        m, n = rng.integers(100, 1500, size=2)
        x = np.ceil(rng.lognormal(np.log(20000) + 0.05 * rep, 0.7, m))
        y = np.ceil(rng.lognormal(np.log(20000), 0.7, n))
        cases.append(("latency", x, y))
    out = []
    for name, x, y in cases:
        qx = np.array([hdr_representative(v) for v in x], float)
        qy = np.array([hdr_representative(v) for v in y], float)
        est, ci = hl_reference(qx, qy)
        c = {"name": f"{name} m={len(x)} n={len(y)}", "x": values(x), "y": values(y), "alternatives": {},
             "hodges_lehmann": est, "ci95": ci}
        for alt in ALTS:
            r = stats.mannwhitneyu(qx, qy, alternative=alt, method="asymptotic", use_continuity=True)
            c["alternatives"][alt] = {"statistic": float(r.statistic), "p_value": float(r.pvalue)}
        w = stats.ttest_ind(qx, qy, equal_var=False)
        c["welch_t"], c["welch_p"] = float(w.statistic), float(w.pvalue)
        out.append(c)
    return out


# ---------------------------------------------------------- proportions
def count_tables():
    t = [(5, 83, 12, 99), (0, 100, 5, 100), (5, 100, 0, 100), (1, 1_000_000, 0, 1_000_000),
         (100, 100, 50, 100), (100, 100, 100, 100), (0, 10, 0, 10), (3, 10, 3, 10), (50, 1000, 30, 1000),
         (1, 2, 1, 2), (7, 7, 0, 3), (0, 1, 1, 1), (120, 20000, 60, 20000), (2, 50000, 1, 950000),
         (900, 1000, 880, 1000), (3, 4, 1, 4), (8, 10, 1, 6), (1, 10_000_000, 3, 10_000_000),
         (1300, 1_000_000, 1000, 1_000_000), (13000, 100_000_000, 12000, 100_000_000),
         (130_000, 1_000_000_000, 128_000, 1_000_000_000)]
    for _ in range(40):
        nx, ny = rng.integers(1, 5000, size=2)
        px, py = rng.uniform(0, 0.2, size=2)
        t.append((int(rng.binomial(nx, px)), int(nx), int(rng.binomial(ny, py)), int(ny)))
    return t


def ztest_cases():
    out = []
    for kx, nx, ky, ny in count_tables():
        for alt in ["two-sided", "larger", "smaller"]:
            c = {"kx": kx, "nx": nx, "ky": ky, "ny": ny, "alternative": alt}
            pooled = (kx + ky) / (nx + ny)
            if pooled in (0.0, 1.0):
                c["error"] = True  # statsmodels gives (nan, nan)
            else:
                z, p = proportions_ztest([kx, ky], [nx, ny], alternative=alt)
                c["statistic"], c["p_value"] = float(z), float(p)
            out.append(c)
    return out


def fisher_cases():
    out = []
    tables = count_tables()
    # Small tables hit the two-sided tie rule and the zero-cell cases.
    for a in range(0, 6):
        for c in range(0, 6):
            tables.append((a, 5, c, 6))
    for kx, nx, ky, ny in tables:
        for alt in ALTS:
            odds, p = stats.fisher_exact([[kx, nx - kx], [ky, ny - ky]], alternative=alt)
            out.append({"kx": kx, "nx": nx, "ky": ky, "ny": ny, "alternative": alt,
                        "statistic": num(odds), "p_value": float(p)})
    return out


def welch_cases():
    out = []
    pairs = [("females vs males", [20, 11, 17, 12], [19, 22, 16, 29, 24]),
             ("one constant", [1.0, 1.0, 1.0], [1.0, 2.0, 4.0]),
             ("two values", [1.0, 2.0], [3.0, 5.0])]
    for rep in range(30):
        m, n = rng.integers(2, 400, size=2)
        pairs.append((f"normal m={m} n={n}", rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 3), m),
                      rng.normal(0, rng.uniform(0.1, 3), n)))
    pairs.append(("far apart", rng.normal(50, 1, 30), rng.normal(0, 1, 30)))
    for name, x, y in pairs:
        vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
        df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
        c = {"name": name, "x": values(x), "y": values(y), "df": float(df), "alternatives": {}}
        for alt in ALTS:
            r = stats.ttest_ind(x, y, equal_var=False, alternative=alt)
            c["alternatives"][alt] = {"statistic": float(r.statistic), "p_value": float(r.pvalue)}
        out.append(c)
    return out


def main():
    ref = {
        "generator": "analysis/testdata/gen_reference.py",
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "scipy": scipy.__version__, "statsmodels": statsmodels.__version__},
        "mwu": mwu_cases(),
        "mwu_exact": mwu_exact_cases(),
        "mwu_hist": mwu_hist_cases(),
        "ztest": ztest_cases(),
        "fisher": fisher_cases(),
        "welch": welch_cases(),
    }
    with open(OUT, "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    counts = {k: len(v) for k, v in ref.items() if isinstance(v, list)}
    print(f"wrote {OUT}: {counts}, {os.path.getsize(OUT)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
