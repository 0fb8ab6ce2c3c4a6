"""Measure the retrieval capacity of this library's compact associative memory.

Store L random key/value patterns, then query with each stored key (optionally
noisy) and compare what comes back with the stored value. Two memories:

- exact softmax attention (a dense associative memory, Ramsauer et al. 2020):
  $o(q) = \\sum_i e^{-\\tau (L-i)} e^{\\beta k_i^\\top q} v_i / \\sum_i e^{-\\tau
  (L-i)} e^{\\beta k_i^\\top q}$;
- the random-feature memory of Mnemosyne (Eqs. (4), (5), (A.1)), written one
  pattern per step with `cam_write` and read with `cam_read`, using the
  library's own NumPy reference kernels.

Keys are random unit vectors in $\\mathbb{R}^d$ scaled by $\\sqrt\\beta$ (so the
kernel is $e^{\\beta \\cos(k, q)}$; $\\beta$ is the inverse temperature); values
are standard Gaussian in $\\mathbb{R}^d$. Error: relative L2,
$\\|o - v\\| / \\|v\\|$, averaged over the stored patterns and seeds (returning
the mean of the values, i.e. remembering nothing, scores about 1).

These are measurements of THIS implementation, not the paper's theorems (which
are not public).

Usage: python scripts/cam_capacity.py [--quick] [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from mnemosyne.backends import numpy_backend

cam_read = numpy_backend.cam_read  # Eq. (5)
cam_write = numpy_backend.cam_write  # Eq. (4)
hyperbolic_features = numpy_backend.hyperbolic_features  # Eq. (A.1)
hyperbolic_query_features = numpy_backend.hyperbolic_query_features
orthogonal_gaussian_matrix = numpy_backend.orthogonal_gaussian_matrix

EPS = 1e-300


def patterns(rng, d, n):
    keys = rng.standard_normal((d, n))
    keys /= np.linalg.norm(keys, axis=0, keepdims=True)
    values = rng.standard_normal((d, n))
    return keys, values


def noisy(rng, keys, noise):
    if noise == 0:
        return keys
    q = keys + noise * rng.standard_normal(keys.shape) / np.sqrt(keys.shape[0])
    return q / np.linalg.norm(q, axis=0, keepdims=True)


def rel_error(out, values):
    err = np.linalg.norm(out - values, axis=0) / np.linalg.norm(values, axis=0)
    return err


def exact_read(keys, values, queries, beta, tau):
    """Dense associative memory (softmax attention) over the stored patterns."""
    L = keys.shape[1]
    logits = beta * keys.T @ queries - tau * (L - 1 - np.arange(L))[:, None]
    logits -= logits.max(axis=0, keepdims=True)
    w = np.exp(logits)
    return values @ (w / w.sum(axis=0, keepdims=True))


def cam_errors(keys, values, queries, beta, tau, omega, snapshots):
    """Write the patterns one per step into one memory slot with cam_write
    (Eq. 4); at each L in `snapshots` read all L stored patterns with cam_read
    (Eq. 5). Returns {L: per-pattern relative errors}."""
    d, n = keys.shape
    r = 2 * omega.shape[0]
    scale = np.sqrt(beta)
    phi_k = hyperbolic_features(scale * keys, omega)  # (r, n), Eq. (A.1)
    numerator = np.zeros((1, r, d, 1))
    normaliser = np.zeros((1, r, 1))
    decay = np.array([np.exp(-tau)])
    out = {}
    for i in range(n):
        numerator, normaliser = cam_write(
            numerator,
            normaliser,
            phi_k[None, :, i : i + 1],
            values[None, :, i : i + 1],
            decay,
        )
        L = i + 1
        if L in snapshots:
            phi_q = hyperbolic_query_features(scale * queries[:, :L], omega)[None]
            read = cam_read(numerator, normaliser, phi_q, EPS)  # (d, L)
            out[L] = rel_error(read, values[:, :L])
    return out


FULL = dict(
    seeds=(0, 1, 2),
    Ls=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    dims=(16, 32, 64),
    rs=(16, 64, 256, 1024),
    betas=(1.0, 2.0, 4.0, 8.0, 16.0),
    taus=(0.0, 0.01, 0.1),
    noises=(0.0, 0.1, 0.3, 0.5),
    base_d=32,
    base_beta=4.0,
)
QUICK = dict(
    FULL,
    seeds=(0, 1),
    Ls=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    dims=(16, 32),
    rs=(16, 64, 256),
    betas=(1.0, 4.0),
    noises=(0.0, 0.3),
)


def run(grid: dict = FULL):
    """Measure every configuration of `grid` (see `FULL`); `base_d` and
    `base_beta` must be among its `dims` and `betas`."""
    seeds, dims, rs, betas = grid["seeds"], grid["dims"], grid["rs"], grid["betas"]
    Ls, taus, noises = list(grid["Ls"]), grid["taus"], grid["noises"]
    base_d, base_beta = grid["base_d"], grid["base_beta"]
    quick = grid == QUICK
    snapshots = set(Ls)
    Lmax = max(Ls)
    records = []

    def record(memory, d, r, beta, tau, noise, errs_by_seed):
        for L in Ls:
            e = np.concatenate([errs[L] for errs in errs_by_seed])
            records.append(
                dict(
                    memory=memory,
                    d=d,
                    r=r,
                    beta=beta,
                    tau=tau,
                    noise=noise,
                    L=L,
                    rel_error=float(e.mean()),
                    rel_error_median=float(np.median(e)),
                    frac_within_0_5=float(np.mean(e < 0.5)),
                )
            )

    # Which configurations: the full r x d x beta grid at tau=0, noise=0; tau and
    # noise sweeps at the base (d, beta) for every r.
    configs = set()
    for d in dims:
        for beta in betas:
            configs.add((d, beta, 0.0, 0.0))
    for tau in taus:
        configs.add((base_d, base_beta, tau, 0.0))
    for noise in noises:
        configs.add((base_d, base_beta, 0.0, noise))
    age_profile = {}
    for d, beta, tau, noise in sorted(configs):
        exact_by_seed, cam_by_seed = [], {r: [] for r in rs}
        for seed in seeds:
            rng = np.random.default_rng(seed)
            keys, values = patterns(rng, d, Lmax)
            queries = noisy(rng, keys, noise)
            ex = {}
            for L in Ls:
                o = exact_read(keys[:, :L], values[:, :L], queries[:, :L], beta, tau)
                ex[L] = rel_error(o, values[:, :L])
            exact_by_seed.append(ex)
            for r in rs:
                omega = orthogonal_gaussian_matrix(
                    np.random.default_rng(1000 + seed), r // 2, d
                )
                cam_by_seed[r].append(
                    cam_errors(keys, values, queries, beta, tau, omega, snapshots)
                )
        record("exact", d, None, beta, tau, noise, exact_by_seed)
        for r in rs:
            record("cam", d, r, beta, tau, noise, cam_by_seed[r])
        if d == base_d and beta == base_beta and noise == 0.0:
            # error as a function of a pattern's age (L - i), at L = Lmax
            age_profile[str(tau)] = {
                "exact": np.mean([e[Lmax] for e in exact_by_seed], axis=0)[
                    ::-1
                ].tolist(),
                **{
                    f"cam_r{r}": np.mean([e[Lmax] for e in cam_by_seed[r]], axis=0)[
                        ::-1
                    ].tolist()
                    for r in rs
                },
            }
        print(f"d={d} beta={beta} tau={tau} noise={noise}: done", flush=True)
    meta = dict(
        seeds=list(seeds),
        Ls=Ls,
        dims=list(dims),
        rs=list(rs),
        betas=list(betas),
        taus=list(taus),
        noises=list(noises),
        base_d=base_d,
        base_beta=base_beta,
        quick=quick,
        key_scale="keys: unit vectors times sqrt(beta); kernel exp(beta cos)",
        metric=(
            "relative L2 error ||o - v|| / ||v||, mean over stored patterns and seeds"
        ),
    )
    return dict(meta=meta, records=records, age_profile=age_profile)


def select(records, **kw):
    return [r for r in records if all(r[k] == v for k, v in kw.items())]


def plot(result, out_dir: pathlib.Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, recs = result["meta"], result["records"]
    d0, b0 = m["base_d"], m["base_beta"]
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(m["rs"])))

    # 1. error vs L, one panel per beta, at d = base_d
    fig, axes = plt.subplots(
        1, len(m["betas"]), figsize=(3.6 * len(m["betas"]), 3.4), sharey=True
    )
    for ax, beta in zip(np.atleast_1d(axes), m["betas"], strict=True):
        ex = select(recs, memory="exact", d=d0, beta=beta, tau=0.0, noise=0.0)
        ax.plot(
            [r["L"] for r in ex],
            [r["rel_error"] for r in ex],
            "k-o",
            ms=3,
            label="exact softmax",
        )
        for c, rr in zip(colors, m["rs"], strict=True):
            cm = select(recs, memory="cam", d=d0, r=rr, beta=beta, tau=0.0, noise=0.0)
            ax.plot(
                [r["L"] for r in cm],
                [r["rel_error"] for r in cm],
                "-o",
                ms=3,
                color=c,
                label=f"CAM r={rr}",
            )
        ax.set_xscale("log", base=2)
        ax.set_title(f"d={d0}, β={beta:g}")
        ax.set_xlabel("stored patterns L")
        ax.axhline(1.0, color="grey", lw=0.5, ls=":")
    np.atleast_1d(axes)[0].set_ylabel("relative retrieval error")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(
        "Retrieval error vs number of stored patterns (τ=0, exact keys)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(out_dir / "cam_capacity_vs_L.png", dpi=110)
    plt.close(fig)

    # 2. error vs r at a few L, one panel per d, beta = base
    Lsel = [L for L in (16, 64, 256) if L in m["Ls"]]
    fig, axes = plt.subplots(
        1, len(m["dims"]), figsize=(3.6 * len(m["dims"]), 3.4), sharey=True
    )
    lc = plt.cm.plasma(np.linspace(0, 0.8, len(Lsel)))
    for ax, d in zip(np.atleast_1d(axes), m["dims"], strict=True):
        for c, L in zip(lc, Lsel, strict=True):
            cm = [
                select(recs, memory="cam", d=d, r=rr, beta=b0, tau=0.0, noise=0.0, L=L)[
                    0
                ]
                for rr in m["rs"]
            ]
            ax.plot(
                m["rs"],
                [r["rel_error"] for r in cm],
                "-o",
                ms=3,
                color=c,
                label=f"CAM, L={L}",
            )
            ex = select(recs, memory="exact", d=d, beta=b0, tau=0.0, noise=0.0, L=L)[0]
            ax.axhline(ex["rel_error"], color=c, ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"d={d}, β={b0:g} (dashed: exact softmax)")
        ax.set_xlabel("random features r")
    np.atleast_1d(axes)[0].set_ylabel("relative retrieval error")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "cam_capacity_vs_r.png", dpi=110)
    plt.close(fig)

    # 3. discount: error vs age at L = Lmax; 4. noise: error vs L
    rbig = m["rs"][-1]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    tc = plt.cm.cividis(np.linspace(0, 0.85, len(m["taus"])))
    for c, tau in zip(tc, m["taus"], strict=True):
        prof = result["age_profile"][str(tau)]
        ages = np.arange(1, len(prof["exact"]) + 1)
        a1.plot(ages, prof["exact"], "--", color=c, lw=0.8)
        a1.plot(ages, prof[f"cam_r{rbig}"], "-", color=c, label=f"τ={tau:g}")
    a1.set_xscale("log", base=2)
    a1.set_xlabel("age of the pattern (steps since written)")
    a1.set_ylabel("relative retrieval error")
    a1.set_title(
        f"Discounting: L={max(m['Ls'])}, d={d0}, β={b0:g}\nsolid CAM r={rbig}, dashed "
        "exact",
        fontsize=9,
    )
    a1.legend(fontsize=7)
    nc = plt.cm.magma(np.linspace(0, 0.8, len(m["noises"])))
    for c, noise in zip(nc, m["noises"], strict=True):
        cm = select(recs, memory="cam", d=d0, r=rbig, beta=b0, tau=0.0, noise=noise)
        ex = select(recs, memory="exact", d=d0, beta=b0, tau=0.0, noise=noise)
        a2.plot(
            [r["L"] for r in cm],
            [r["rel_error"] for r in cm],
            "-",
            color=c,
            label=f"noise σ={noise:g}",
        )
        a2.plot(
            [r["L"] for r in ex], [r["rel_error"] for r in ex], "--", color=c, lw=0.8
        )
    a2.set_xscale("log", base=2)
    a2.set_xlabel("stored patterns L")
    a2.set_title(
        f"Noisy queries: d={d0}, β={b0:g}, τ=0\nsolid CAM r={rbig}, dashed exact",
        fontsize=9,
    )
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "cam_capacity_discount_noise.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller grid (about a minute)"
    )
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs")
    parser.add_argument(
        "--json",
        default=None,
        help="where to write the numbers (default: <out>/cam_capacity.json)",
    )
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run(QUICK if args.quick else FULL)
    result["meta"]["seconds"] = round(time.perf_counter() - t0, 1)
    json_path = pathlib.Path(args.json) if args.json else out_dir / "cam_capacity.json"
    json_path.write_text(json.dumps(result, indent=1))
    plot(result, out_dir)
    print(
        f"wrote {json_path} and {out_dir}/cam_capacity_*.png in "
        f"{result['meta']['seconds']} s"
    )


if __name__ == "__main__":
    main()
