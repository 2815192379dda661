#!/usr/bin/python3
# The scaling model of data-parallel (and pipeline) training: fits the ring all-reduce model to bench_dist's
# measurements, simulates a training step of dist::data_parallel (buckets ready during backward, all-reduced one
# after the other on the group's communication thread), checks the simulation against measured epochs of
# examples/fashion_mnist_ddp on this machine, and predicts the step time, the exposed communication and the scaling
# efficiency on 8..64 machines, the best bucket size and the pipeline depth. It writes the part of
# docs/distributed.md between the markers below (or prints it with --no-doc). Every figure in that part is computed
# here from the input files and the options: rerun this program rather than editing a figure.
# Standard library only (Debian's /usr/bin/python3).
#
#   bench/dist_model.py --allreduce AR.json [--tcp TCP.json] [--epochs EPOCHS.tsv] [--profile PROFILE.txt]
#                       [--doc docs/distributed.md | --no-doc] [--placeholder] [options]
# Inputs:
#   --allreduce  Google Benchmark JSON of bench/bench_dist on 2 ranks of this machine (families
#                BM_allreduce_{tessera,tessera_async,mpi}, argument bytes:N; medians used when present).
#   --tcp        the same run with `--mca btl tcp,self`: its fitted alpha is the latency of a network path; without it
#                alpha = --alpha-us (default 15 us).
#   --epochs     TSV lines `ranks threads seconds_per_epoch steps_per_epoch_per_rank` of fashion_mnist_ddp (1 rank
#                needed; '#' lines skipped).
#   --profile    fashion_mnist_ddp's output: its `bucket K: B bytes, P parameters, started X ms (L parameters still
#                to come), finished Y ms` and `backward walk ended W ms after the first gradient` lines (the last
#                epoch's set is used); gives the buckets, when each is ready (fraction of the walk) and f_b.
# Options: --family (the all-reduce fitted for the model: tessera_async, the one data_parallel uses), --cores 2
#   (this machine: compute per rank runs at cores/ranks of its speed beyond that), --backward-fraction (f_b; default
#   from the profile, else 0.6), --efficiency 0.9 (of the link rate), --alpha-us 15, --scale 100 (the large model),
#   --activation 8192 (floats per sample crossing a pipeline cut), --batch 32 (per rank), --speedup 1 (the
#   predictions' compute this much faster than this machine's), --profile-ranks 2, --placeholder (marks the block as
#   figures from sample inputs). The model and its formulas: docs/distributed.md.
import argparse, json, os, re, sys

BEGIN = "<!-- dist_model begin -->"
END = "<!-- dist_model end -->"
UNIT_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
MiB = 1 << 20
FAMILIES = ("tessera_async", "tessera", "mpi")
SIMPLECNN_PARAMS = 421642
NETS = (25, 100)          # Gbit/s
RANKS = (8, 16, 32, 64)
CAPS = (1, 4, 16, 25, 64, 256)
STAGES = (1, 2, 4, 8)
MICRO = (4, 8, 16, 32)


# ---- inputs ----------------------------------------------------------------------------------------------------------
def load_allreduce(path):
    """{family: {bytes: seconds}}, ranks, context of a bench_dist JSON (medians when the run has them)."""
    doc = json.load(open(path))
    runs = [b for b in doc.get("benchmarks", []) if not b.get("error_occurred") and not b.get("skipped")]
    medians = {b["run_name"] for b in runs if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median"}
    out, ranks = {}, 2
    for b in runs:
        run = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if b.get("run_type") != "aggregate" and run in medians:
            continue
        parts = run.split("/")
        if not parts[0].startswith("BM_allreduce_"):
            continue
        args = dict(p.split(":", 1) for p in parts[1:] if ":" in p)
        if "bytes" not in args:
            continue
        fam = parts[0][len("BM_allreduce_"):]
        out.setdefault(fam, {})[int(args["bytes"])] = b["real_time"] * UNIT_S[b.get("time_unit", "ns")]
        ranks = int(b.get("ranks", ranks))
    if not out:
        sys.exit(f"dist_model: no BM_allreduce_* results in {path}")
    return out, ranks, doc.get("context", {})


def load_epochs(path):
    rows = {}
    for line in open(path):
        f = line.split()
        if not f or line.startswith("#") or not f[0].isdigit():
            continue
        rows[int(f[0])] = (int(f[1]), float(f[2]), int(f[3]))  # ranks -> threads, seconds, steps (the last line wins)
    if 1 not in rows:
        sys.exit(f"dist_model: {path} has no 1-rank line (the compute time comes from it)")
    return rows


def load_profile(path):
    bucket = re.compile(r"bucket (\d+): (\d+) bytes, (\d+) parameters, started ([\d.]+) ms \((\d+) parameters still "
                        r"to come\), finished ([\d.]+) ms")
    walk = re.compile(r"backward walk ended ([\d.]+) ms after the first gradient")
    cur, last = {}, None
    for line in open(path):
        m = bucket.search(line)
        if m:
            k = int(m.group(1))
            if k == 0:
                cur = {}
            cur[k] = dict(bytes=int(m.group(2)), params=int(m.group(3)), started=float(m.group(4)) * 1e-3,
                          left=int(m.group(5)), finished=float(m.group(6)) * 1e-3)
        m = walk.search(line)
        if m and cur:
            last = ([cur[k] for k in sorted(cur)], float(m.group(1)) * 1e-3)
    if not last:
        sys.exit(f"dist_model: no bucket lines followed by a 'backward walk ended' line in {path}")
    return last


# ---- the all-reduce model --------------------------------------------------------------------------------------------
def t_ar(S, n, alpha, beta):
    """Ring all-reduce of S bytes over n ranks: 2(n-1) alpha + 2(n-1)/n S / beta."""
    return 0.0 if n <= 1 else 2 * (n - 1) * alpha + 2 * (n - 1) / n * S / beta


def fit(times, n):
    """Least squares of t = a + b S weighted by 1/t^2 (relative error): alpha = a / 2(n-1), beta = 2(n-1)/n / b."""
    pts = sorted(times.items())
    w = [1 / t ** 2 for _, t in pts]
    sw = sum(w); sx = sum(wi * S for wi, (S, _) in zip(w, pts)); sy = sum(wi * t for wi, (_, t) in zip(w, pts))
    sxx = sum(wi * S * S for wi, (S, _) in zip(w, pts)); sxy = sum(wi * S * t for wi, (S, t) in zip(w, pts))
    det = sw * sxx - sx * sx
    a = (sxx * sy - sx * sxy) / det if len(pts) > 1 and det > 0 else 0.0
    b = (sw * sxy - sx * sy) / det if len(pts) > 1 and det > 0 else 0.0
    if a < 0 or b <= 0:  # a latency below zero: fit the slope alone through the origin
        a, b = 0.0, sxy / sxx
    alpha, beta = a / (2 * (n - 1)), 2 * (n - 1) / n / b
    err = {S: t_ar(S, n, alpha, beta) / t - 1 for S, t in pts}
    return alpha, beta, err


# ---- the step model --------------------------------------------------------------------------------------------------
def ready_shape(buckets, walk):
    """Walk fraction at which a fraction g of the gradient bytes (in bucket order) is ready: piecewise linear."""
    total = sum(b["bytes"] for b in buckets)
    pts, cum, r = [(0.0, 0.0)], 0, 0.0
    for b in buckets:
        cum += b["bytes"]
        r = max(r, min(1.0, b["started"] / walk))
        pts.append((cum / total, r))

    def shape(g):
        for (g0, r0), (g1, r1) in zip(pts, pts[1:]):
            if g <= g1:
                return r1 if g1 == g0 else r0 + (r1 - r0) * (g - g0) / (g1 - g0)
        return pts[-1][1]
    return shape


def make_buckets(nbytes, first_cap, cap, shape):
    """[(bytes, ready fraction)]: the first bucket closes at first_cap bytes, the others at cap (fine-grained params)."""
    out, done = [], 0
    while done < nbytes:
        size = min(first_cap if not out else cap, nbytes - done)
        done += size
        out.append((size, shape(done / nbytes)))
    return out


def step(t_compute, f_b, buckets, n, alpha, beta, overlap=True):
    """T_step = T_compute + max(0, f_last - W): bucket k ready at r_k W, s_k = max(r_k W, f_{k-1}), f_k = s_k + t_ar."""
    W, f = f_b * t_compute, 0.0
    for S, r in buckets:
        s = max(r * W if overlap else W, f)
        f = s + t_ar(S, n, alpha, beta)
    exposed = max(0.0, f - W) if n > 1 else 0.0
    return t_compute + exposed, exposed


# ---- formatting ------------------------------------------------------------------------------------------------------
def ft(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def fb(n):
    for unit, m in (("MiB", MiB), ("KiB", 1024)):
        if n >= m and n % m == 0:
            return f"{n // m} {unit}"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n} B"


def pct(x, sign=False):
    v = round(100 * x) + 0  # (+ 0: no "-0")
    return f"{v:+d} %" if sign and v else f"{v:d} %"


def table(head, rows):
    L = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    return "\n".join(L + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


# ---- the block -------------------------------------------------------------------------------------------------------
def build(a):
    ar, n_ar, ctx = load_allreduce(a.allreduce)
    fam = a.family if a.family in ar else next(f for f in FAMILIES + tuple(ar) if f in ar)
    fits = {f: fit(ar[f], n_ar) for f in FAMILIES + tuple(sorted(set(ar) - set(FAMILIES))) if f in ar}
    alpha_l, beta_l, _ = fits[fam]
    L = [BEGIN, "<!-- Generated by bench/dist_model.py from its input files: rerun it, do not edit this block. -->", ""]
    if a.placeholder:
        L += ["**Placeholder figures from sample inputs, not measurements: the block is regenerated from measured "
              "inputs with the commands under \"Reproducing the figures\".**", ""]
    inputs = [f"`{os.path.basename(p)}`" for p in (a.allreduce, a.tcp, a.epochs, a.profile) if p]
    L += [f"Inputs: {', '.join(inputs)}" + (f" (all-reduce measured {ctx.get('date', '?')} on {ctx.get('host_name', '?')}, "
          f"{ctx.get('num_cpus', '?')} CPUs)" if ctx else "") + f". Model all-reduce: `{fam}`; cores: {a.cores}.", ""]

    # all-reduce on this machine
    L += [f"### All-reduce on this machine ({n_ar} ranks, shared memory)", "",
          "Measured time per all-reduce (the fit's relative error in brackets):", ""]
    sizes = sorted({S for f in fits for S in ar[f]})
    L.append(table(["bytes"] + [f"`{f}`" for f in fits],
                   [[fb(S)] + [f"{ft(ar[f][S])} ({pct(fits[f][2][S], True)})" if S in ar[f] else "—" for f in fits]
                    for S in sizes]))
    L += ["", "Fit of t(S) = 2(n−1)·α + 2(n−1)/n · S/β, least squares of the relative error:", ""]
    rows = [[f"`{f}`", f"{al * 1e6:.1f}", f"{be / 1e9:.2f}", f"{pct(max(abs(e) for e in er.values()))} "
             f"(at {fb(max(er, key=lambda S: abs(er[S])))})"] for f, (al, be, er) in fits.items()]
    if a.tcp:
        tar, n_tcp, _ = load_allreduce(a.tcp)
        tf = fam if fam in tar else next(iter(tar))
        alpha_net, beta_tcp, er = fit(tar[tf], n_tcp)
        rows.append([f"`{tf}` over loopback TCP", f"{alpha_net * 1e6:.1f}", f"{beta_tcp / 1e9:.2f}",
                     f"{pct(max(abs(e) for e in er.values()))} (at {fb(max(er, key=lambda S: abs(er[S])))})"])
        alpha_src = f"α = {alpha_net * 1e6:.1f} µs, the loopback-TCP fit of `{tf}`"
    else:
        alpha_net = a.alpha_us * 1e-6
        alpha_src = f"α = {a.alpha_us:g} µs, a stated default (no TCP measurement given)"
    L += [table(["all-reduce", "α (µs)", "β (GB/s)", "worst fit error"], rows), ""]

    # the profile and the compute
    ep = load_epochs(a.epochs) if a.epochs else None
    t_c1 = ep[1][1] / ep[1][2] if ep else None
    slow = lambda n: max(1.0, n / a.cores)
    if a.profile:
        pb, walk = load_profile(a.profile)
        shape = ready_shape(pb, walk)
        nparams = sum(b["bytes"] for b in pb) // 4
        cnn = [(b["bytes"], min(1.0, b["started"] / walk)) for b in pb]
        L += [f"### Buckets of the profile (backward walk {ft(walk)} from the first gradient)", "",
              table(["bucket", "bytes", "parameters", "ready (all-reduce queued)", "of the walk", "finished"],
                    [[k, f"{b['bytes']:,}", b["params"], ft(b["started"]), pct(min(1, b["started"] / walk)),
                      ft(b["finished"])] for k, b in enumerate(pb)]), ""]
    else:
        shape, walk, pb = (lambda g: g), None, None
        nparams = SIMPLECNN_PARAMS
        cnn = make_buckets(nparams * 4, MiB, 25 * MiB, shape)
        L += ["No profile given: SimpleCNN's buckets are made by the rule (1 MiB, then 25 MiB) and its gradients are "
              "taken as ready uniformly over the walk.", ""]
    if a.backward_fraction is not None:
        f_b, fb_src = a.backward_fraction, "given with --backward-fraction"
    elif walk and t_c1:
        f_b = min(0.95, walk / (t_c1 * slow(a.profile_ranks)))
        fb_src = f"the profile's walk ({ft(walk)}) over the {a.profile_ranks}-rank compute time per step"
    else:
        f_b, fb_src = 0.6, "a default"
    L += [f"Backward fraction f_b = {f_b:.2f} ({fb_src})."]
    if pb and t_c1:
        meas = max(0.0, pb[-1]["finished"] - walk)
        _, model = step(t_c1 * slow(a.profile_ranks), f_b, cnn, a.profile_ranks, alpha_l, beta_l)
        L[-1] += (f" Exposed communication of the profiled step on {a.profile_ranks} ranks: measured {ft(meas)} "
                  f"(last bucket finished − walk end), model {ft(model)}.")
    L.append("")

    # the check against measured epochs
    if ep:
        L += ["### Model against measured epochs on this machine", "",
              f"T_compute(1) = {ft(t_c1)} per step (the 1-rank epoch over its steps); compute per rank × "
              f"max(1, ranks/{a.cores}).", ""]
        rows = []
        for n in sorted(ep):
            th, sec, st = ep[n]
            tc = t_c1 * slow(n)
            on, ex = step(tc, f_b, cnn, n, alpha_l, beta_l)
            off, _ = step(tc, f_b, cnn, n, alpha_l, beta_l, overlap=False)
            rows.append([n, th, st, ft(sec / st), f"{sec / st / t_c1:.2f}×", f"{slow(n):.2f}×", ft(ex),
                         f"{on * st:.2f} s ({pct(on * st / sec - 1, True)})",
                         f"{off * st:.2f} s ({pct(off * st / sec - 1, True)})", f"{sec:.2f} s"])
        L += [table(["ranks", "threads", "steps/rank", "measured step", "measured / 1-rank step", "model compute factor",
                     "model exposed", "model epoch, overlap (error)", "model epoch, no overlap (error)",
                     "measured epoch"], rows), ""]
    if not t_c1:
        L += [END]
        return "\n".join(L) + "\n"

    # predictions across machines
    big_bytes = nparams * 4 * a.scale
    t_c1 /= a.speedup  # (the predictions' compute: --speedup for faster machines than this one)
    nets = [(g, g / 8 * 1e9 * a.efficiency) for g in NETS]
    L += [f"### Data parallel across machines (weak scaling, batch {a.batch} per rank, one rank per machine)", ""]
    if a.speedup != 1:
        L += [f"Compute {a.speedup:g}× faster than this machine's (--speedup) in every prediction below.", ""]
    L += [
          f"Network: {alpha_src}; β = link rate / 8 × {a.efficiency:g} ("
          + ", ".join(f"{g} Gbit/s → {be / 1e9:.2f} GB/s" for g, be in nets) + "). f_b as above; efficiency = "
          "T_step(1) / T_step(n).", ""]
    models = [("SimpleCNN", nparams, t_c1, cnn),
              (f"{a.scale}× SimpleCNN", nparams * a.scale, t_c1 * a.scale,
               make_buckets(big_bytes, MiB, 25 * MiB, shape))]
    for name, npar, tc, bk in models:
        L += [f"**{name}**: {npar / 1e6:.3g} M parameters ({fb(npar * 4)}), {len(bk)} bucket(s), T_compute = {ft(tc)}.",
              ""]
        rows = []
        for n in RANKS:
            row = [n]
            for g, be in nets:
                s, ex = step(tc, f_b, bk, n, alpha_net, be)
                s0, _ = step(tc, f_b, bk, n, alpha_net, be, overlap=False)
                row += [ft(s), ft(ex), pct(tc / s), pct(tc / s0)]
            rows.append(row)
        L += [table(["ranks"] + [f"{g}G {c}" for g, _ in nets for c in ("step", "exposed", "efficiency",
                                                                          "eff. no overlap")], rows), ""]

    # bucket size
    n = 32
    tc = t_c1 * a.scale
    shapes = [("profile shape", shape)] + ([("uniform", lambda g: g)] if a.profile else [])
    L += [f"### Bucket size ({a.scale}× model, {n} ranks; first bucket 1 MiB)", "",
          "Step time by bucket_cap_mb (link busy: the sum of the buckets' all-reduce times)"
          + (", with the profile's gradient-ready shape and with gradients ready uniformly over the walk (a deep "
             "stack of similar layers):" if a.profile else ":"), ""]
    res = {}
    for cap in CAPS:
        for si, (_, sh) in enumerate(shapes):
            for g, be in nets:
                bk = make_buckets(big_bytes, MiB, cap * MiB, sh)
                busy = sum(t_ar(S, n, alpha_net, be) for S, _ in bk)
                res[cap, si, g] = step(tc, f_b, bk, n, alpha_net, be) + (busy, bk)
    L += [table(["bucket_cap_mb", "buckets", "last bucket"]
                + [f"{g}G {c}" for g in NETS for c in ("link busy", "step (exposed)")]
                + [f"{g}G step, {sn}" for sn, _ in shapes[1:] for g in NETS],
                [[cap, len(res[cap, 0, NETS[0]][3]), fb(res[cap, 0, NETS[0]][3][-1][0])]
                 + [c for g in NETS for c in (ft(res[cap, 0, g][2]), f"{ft(res[cap, 0, g][0])} ({ft(res[cap, 0, g][1])})")]
                 + [ft(res[cap, si, g][0]) for si in range(1, len(shapes)) for g in NETS] for cap in CAPS]), ""]
    best = {(si, g): min(CAPS, key=lambda c: res[c, si, g][0]) for si in range(len(shapes)) for g in NETS}
    lat = 2 * (n - 1) * alpha_net
    L += ["Best cap: " + "; ".join(f"{shapes[si][0]}, {g}G: {c} MiB ({ft(res[c, si, g][0])}; 25 MiB: "
                                   f"{ft(res[25, si, g][0])})" for (si, g), c in best.items())
          + f". Each bucket costs 2(n−1)·α = {ft(lat)} of latency on {n} ranks ({ft(lat * len(res[CAPS[0], 0, 25][3]))} "
          f"for the {len(res[CAPS[0], 0, 25][3])} buckets of {CAPS[0]} MiB), against a walk of {ft(f_b * tc)}: what is "
          "exposed is the backlog at the end of the walk plus the last bucket (the first layers' gradients, ready only "
          "then), so small buckets lose to latency once the link is busier than the walk is long, and large ones put "
          "a large last bucket (and everything queued behind a late bucket) after the walk."
          + (" The two gradient-ready shapes differ by at most "
             f"{ft(max(abs(res[c, 0, g][0] - res[c, 1, g][0]) for c in CAPS for g in NETS))} here." if a.profile
             else ""), ""]

    # pipeline
    tsend = lambda m, be: alpha_net + a.activation * (a.batch / m) * 4 / be
    L += [f"### Pipeline depth ({a.scale}× model, batch {a.batch}, {a.activation} floats per sample at each cut)", "",
          "step = (m + p − 1) · max(T_compute/(p·m), t_send) + 2(p − 1) · t_send, t_send = α + A · b/m · 4 / β "
          "(p = 1: T_compute); speedup = T_compute / step, efficiency = speedup / p.", ""]
    rows, eff = [], {}
    for p in STAGES:
        for m in (MICRO if p > 1 else MICRO[:1]):
            row = [p, m if p > 1 else "—", pct((p - 1) / (m + p - 1))]
            for g, be in nets:
                ts_ = tsend(m, be) if p > 1 else 0.0
                s = tc if p == 1 else (m + p - 1) * max(tc / (p * m), ts_) + 2 * (p - 1) * ts_
                eff[p, m, g] = tc / s / p
                row += [ft(s), f"{tc / s:.2f}× ({pct(tc / s / p)})", ft(ts_) if p > 1 else "—"]
            rows.append(row)
    L += [table(["stages p", "micro-batches m", "bubble"] + [f"{g}G {c}" for g, _ in nets
                                                              for c in ("step", "speedup (eff.)", "t_send")], rows), ""]
    ok = [(p, m) for p in STAGES[1:] for m in MICRO if (p - 1) / (m + p - 1) < 0.2]
    first = {p: min((m for q, m in ok if q == p), default=None) for p in STAGES[1:]}
    L += ["Bubble under 20 %: " + ", ".join(f"p = {p}: m ≥ {m}" if m else f"p = {p}: no m in the table"
                                            for p, m in first.items())
          + ". Data parallel on the same machines instead (weak scaling, " + f"{a.batch} per machine): " + ", ".join(
              f"{p} machines {pct(tc / step(tc, f_b, models[1][3], p, alpha_net, nets[0][1])[0])} at {NETS[0]}G"
              for p in STAGES[1:]) + ". Lowest pipeline efficiency with the bubble under 20 %: " + ", ".join(
              f"{g}G {pct(min(eff[p, m, g] for p, m in ok))}" for g in NETS) + ". With 1F1B a stage holds at most p "
          "micro-batches' activations (GPipe: m), so m = 4p costs no memory beyond p.", ""]
    L.append(END)
    return "\n".join(L) + "\n"


def splice(path, block):
    text = open(path).read() if os.path.exists(path) else "# Distributed training\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    open(path, "w").write(text)


def main():
    ap = argparse.ArgumentParser(description="data-parallel scaling model (docs/distributed.md)")
    ap.add_argument("--allreduce", required=True)
    ap.add_argument("--tcp")
    ap.add_argument("--epochs")
    ap.add_argument("--profile")
    ap.add_argument("--profile-ranks", type=int, default=2, help="ranks of the profiled run (default 2)")
    ap.add_argument("--family", default="tessera_async")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--backward-fraction", type=float)
    ap.add_argument("--efficiency", type=float, default=0.9)
    ap.add_argument("--alpha-us", type=float, default=15.0)
    ap.add_argument("--scale", type=int, default=100)
    ap.add_argument("--activation", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--speedup", type=float, default=1.0, help="compute of the predictions this much faster")
    ap.add_argument("--placeholder", action="store_true")
    ap.add_argument("--doc", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs",
                                                  "distributed.md"))
    ap.add_argument("--no-doc", action="store_true", help="print the block instead of writing the doc")
    a = ap.parse_args()
    try:
        block = build(a)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"dist_model: {e}")
    if a.no_doc:
        sys.stdout.write(block)
    else:
        splice(a.doc, block)
        print(f"dist_model: wrote {os.path.normpath(a.doc)}")


if __name__ == "__main__":
    main()
