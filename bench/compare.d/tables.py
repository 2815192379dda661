# bench/compare.d/tables.py: the tables of a bench/compare block, as Markdown text: the formatting of figures
# (times, rates, sizes, ratios), the summary table (summary_rows: one line per workload against its peer, tessera's
# speed over the peer's) and the detail tables (GEMM against the FMA peak, elementwise, SimpleCNN inference against
# batch, 2 threads against 1, training epochs, contention, int8 GEMM against oneDNN). Every figure comes from the
# results database (results.DB) it is given; a table whose figures are all missing is "" (report.py then leaves its
# section out). Standard library only.


# ---- formatting -----------------------------------------------------------------------------------------------------
def fmt_time(s):
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms" if s * 1e3 < 100 else f"{s * 1e3:.0f} ms"
    return f"{s:.1f} s"


def fmt_rate(v, key):
    if v is None:
        return "—"
    if key == "TFLOP/s":
        return f"{v:.1f} TFLOP/s"
    if key.endswith("OP/s"):
        return f"{v / 1e9:.1f} G{'FLOP' if key == 'FLOP/s' else 'OP'}/s"
    if key == "bytes_per_second":
        return f"{v / 1e9:.1f} GB/s"
    if key == "busbw":
        return f"{v / 1e9:.2f} GB/s"
    if key == "items_per_second":
        return f"{v:.0f} images/s" if v >= 100 else f"{v:.1f} images/s"
    return f"{v:.3g}"


def fmt_n(n):
    n = int(n)
    for unit, m in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= m and n % m == 0:
            return f"{n // m}{unit}"
    return str(n)


def ratio(x):
    return "—" if x is None else f"{x:.2f}×"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def counter_key(e, prefer=None):
    """The rate counter an entry carries: FLOP/s, an OP/s variant, bytes or items per second."""
    if e is None:
        return None
    if prefer and prefer in e.counters:
        return prefer
    for k in ("FLOP/s", "TFLOP/s", "bytes_per_second", "items_per_second"):
        if k in e.counters:
            return k
    for k in e.counters:
        if k.endswith("OP/s"):
            return k
    return None


def series_of(family):
    f = family.lower()
    for key, label in (("openblas", "OpenBLAS"), ("onednn", "oneDNN"), ("dnnl", "oneDNN"), ("eigen", "Eigen"),
                       ("torch", "PyTorch"), ("cublas", "cuBLAS"), ("triad", "triad loop"), ("plain_loop", "plain loop")):
        if key in f:
            return label
    return "tessera"


# ---- the summary table ------------------------------------------------------------------------------------------------
def summary_rows(db, torch_name):
    """(workload, configuration, tessera figure, peer, peer figure, tessera's speed / the peer's)."""
    rows = []

    def row(workload, config, ours, peer_name, peer, by="time"):
        if ours is None or peer is None:
            return
        if by == "time":
            show = counter_key(ours) if (counter_key(ours) or "").endswith("OP/s") else None
            a = fmt_rate(ours.rate(show), show) if show else fmt_time(ours.time_s)
            b = fmt_rate(peer.rate(show), show) if show and peer.rate(show) else fmt_time(peer.time_s)
            r = peer.time_s / ours.time_s
        else:
            key = by
            a, b = fmt_rate(ours.rate(key), key), fmt_rate(peer.rate(key), key)
            r = ours.rate(key) / peer.rate(key)
        rows.append((workload, config, a, peer_name, b, ratio(r)))

    def inference_rows(model, int8_note, peer_note, ours, peer):
        """The test-set inference against the peer, and int8 against float; True when the int8 row was written."""
        if ours and peer and "inference_s" in ours.counters and "inference_s" in peer.counters:
            o, p = ours.counters["inference_s"], peer.counters["inference_s"]
            rows.append((f"{model} inference over the test set", f"{test_images(db)}{peer_note}, 2 threads", fmt_time(o),
                         torch_name, fmt_time(p), ratio(p / o)))
        if not (ours and "int8_inference_s" in ours.counters and "float_inference_s" in ours.counters):
            return False
        q, f = ours.counters["int8_inference_s"], ours.counters["float_inference_s"]
        rows.append((f"{model} int8 inference over the test set {int8_note}", f"{test_images(db)}, 2 threads",
                     fmt_time(q), "tessera float (same run)", fmt_time(f), ratio(f / q)))
        return True

    ns = db.values("BM_chain_fused", "n", threads=2)
    for n in sorted({16777216 if 16777216 in ns else (ns[-1] if ns else 0), ns[-1] if ns else 0} - {0}):
        c = f"{fmt_n(n)} floats, 2 threads"
        k = dict(n=n, threads=2)
        row("chain `tanh(x*y + 0.5*z) * sigmoid(x - z)`", c, db.get("BM_chain_fused", **k), f"{torch_name} eager",
            db.get("BM_torch_chain", **k))
        row("same chain", c, db.get("BM_chain_fused", **k), "Eigen Tensor", db.get("BM_chain_eigen", **k))
        row("`1.5*x + 2.5*y + 3.5*z`", c, db.get("BM_arith_fused", **k), "Eigen Tensor", db.get("BM_arith_eigen", **k))
        row("`1.5*x + 2.5*y + 3.5*z`, bytes/s", c, db.get("BM_arith_fused", **k), "triad loop (same binary)",
            db.get("BM_triad", **k), by="bytes_per_second")
    for n in sorted(set(db.values("BM_autodiff_chain_fused", "n", threads=2))):
        c = f"{fmt_n(n)} floats, forward + backward, 2 threads"
        k = dict(n=n, threads=2)
        row("autodiff chain `tanh(a*b + c) * sigmoid(a - c)` on Vars", c, db.get("BM_autodiff_chain_fused", **k),
            f"{torch_name} eager autograd", db.get("BM_torch_autodiff_chain", **k))
        row("same autodiff chain", c, db.get("BM_autodiff_chain_fused", **k), "tessera op by op (same binary)",
            db.get("BM_autodiff_chain_eager", **k))
    row("MultiheadAttention forward", "B=32 T=128 E=256, 8 heads, 2 threads", db.get("BM_mha_forward"), torch_name,
        db.get("BM_torch_mha_forward", threads=2))
    row("MultiheadAttention forward + backward", "same", db.get("BM_mha_forward_backward"), torch_name,
        db.get("BM_torch_mha_forward_backward", threads=2))
    for n in (256, 1024, 2048, 4096):
        ours = db.get("BM_tessera_sgemm", n=n, threads=2)
        for fam, name in (("BM_openblas_sgemm", "OpenBLAS"), ("BM_onednn_sgemm", "oneDNN"), ("BM_eigen_sgemm", "Eigen")):
            row("SGEMM", f"{n}³, 2 threads", ours, name, db.get(fam, n=n, threads=2))
    row("Linear + bias + ReLU", "256×1024 → 1024, 2 threads", db.get("BM_linear_bias_relu_fused", threads=2), torch_name,
        db.get("BM_torch_linear_bias_relu", threads=2))
    for o, p, n, t in int8_pairs(db, headline=True):
        if t == "2" and 256 <= int(n) <= 2048:
            row("int8 GEMM (u8×s8 → s32)", f"{n}³, 2 threads{', ' + o.label if o.label else ''}", o, "oneDNN u8s8s32", p)
    for c, k, hw in ((1, 32, 28), (32, 64, 14)):
        row("conv2d 3×3 + bias + ReLU", f"64×{c}×{hw}×{hw} → {k}, 2 threads",
            db.get("BM_conv_bias_relu_fused", n=64, c=c, k=k, hw=hw), torch_name,
            db.get("BM_torch_conv_bias_relu", n=64, c=c, k=k, hw=hw, threads=2))
    for c, hw in ((32, 28), (64, 14)):
        row("max_pool2d 2×2", f"64×{c}×{hw}×{hw}, 2 threads", db.get("BM_tessera_max_pool2d", c=c, hw=hw),
            "plain OpenMP loop", db.get("BM_plain_loop_max_pool2d", c=c, hw=hw))
        row("max_pool2d 2×2", f"64×{c}×{hw}×{hw}, 2 threads", db.get("BM_tessera_max_pool2d", c=c, hw=hw),
            torch_name, db.get("BM_torch_max_pool2d", c=c, hw=hw, threads=2))
    row("LSTM forward", "T=100 B=64 I=128 H=256, 2 layers, 2 threads", db.get("BM_lstm_forward"), torch_name,
        db.get("BM_torch_lstm_forward", threads=2))
    row("LSTM forward + backward", "same", db.get("BM_lstm_forward_backward"), torch_name,
        db.get("BM_torch_lstm_forward_backward", threads=2))
    row("SimpleCNN training step", "batch 64, 2 threads", db.get("BM_simplecnn_train_step", threads=2), torch_name,
        db.get("BM_torch_simplecnn_train_step", threads=2))
    for b in (1, 64, 256):
        row("SimpleCNN inference", f"batch {b}, 2 threads", db.get("BM_simplecnn_inference", batch=b, threads=2),
            torch_name, db.get("BM_torch_simplecnn_inference", batch=b, threads=2))
    for fam, model in (("BM_quant_simplecnn_inference", "SimpleCNN"), ("BM_quant_row_lstm_inference", "row-LSTM")):
        for b in (64, 500):
            row(f"{model} int8 inference (bench_quant)", f"batch {b}, 2 threads", db.get(fam, batch=b, threads=2, int8=1),
                "tessera float", db.get(fam, batch=b, threads=2, int8=0))
    for b in (1 << 20, 4 << 20, 16 << 20, 64 << 20):
        row("all-reduce bus bandwidth, tessera's MPI group (bench_dist)", f"{b >> 20} MiB of floats, 2 ranks",
            db.get("BM_allreduce_tessera", bytes=b), "MPI_Allreduce (same binary)", db.get("BM_allreduce_mpi", bytes=b), by="busbw")
    d1, d2 = db.get("BM_epoch_ddp_tessera", ranks=1, threads=1), db.get("BM_epoch_ddp_tessera", ranks=2, threads=1)
    row("SimpleCNN data-parallel epoch (fashion_mnist_ddp)", "Fashion-MNIST, 2 ranks × 1 thread, batch 32 per rank", d2,
        f"{torch_name} DistributedDataParallel (gloo)", db.get("BM_epoch_ddp_torch", ranks=2, threads=1))
    if d1 and d2:
        rows.append(("SimpleCNN data-parallel scaling efficiency (1 rank's time / (2 × 2 ranks' time))",
                     "2 ranks against 1 rank × 1 thread, batch 32 per rank", fmt_time(d2.time_s), "1 rank × 1 thread (same run)",
                     fmt_time(d1.time_s), f"{d1.time_s / (2 * d2.time_s):.2f}"))
    ours, peer = db.get("BM_epoch_simplecnn_tessera", threads=2), db.get("BM_epoch_simplecnn_torch", threads=2)
    row("SimpleCNN training epoch", f"Fashion-MNIST, {epoch_images(db)}, batch 64, 2 threads", ours, torch_name, peer)
    if inference_rows("SimpleCNN", "(quantized after the epoch)", " (tessera in batches of 500, PyTorch in one)", ours, peer):
        q = ours.counters["int8_inference_s"]
        if peer and "inference_s" in peer.counters:
            rows.append(("SimpleCNN int8 inference over the test set", f"{test_images(db)}, 2 threads", fmt_time(q),
                         f"{torch_name} float", fmt_time(peer.counters["inference_s"]), ratio(peer.counters["inference_s"] / q)))
    ours, peer = db.get("BM_epoch_resnet_tessera", threads=2), db.get("BM_epoch_resnet_torch", threads=2)
    row("small ResNet training epoch", f"Fashion-MNIST, {epoch_images(db)}, batch 64, 2 threads", ours, torch_name, peer)
    if ours and "accuracy" in ours.counters:
        rows.append(("small ResNet test accuracy after 1 epoch", "", f"{ours.counters['accuracy']:.2f} %", torch_name,
                     f"{peer.counters['accuracy']:.2f} %" if peer and "accuracy" in peer.counters else "", ""))
    ours, peer = db.get("BM_epoch_row_lstm_tessera", threads=2), db.get("BM_epoch_row_lstm_torch", threads=2)
    row("row-LSTM training epoch", f"Fashion-MNIST, {epoch_images(db)}, batch 64, 2 threads", ours, torch_name, peer)
    inference_rows("row-LSTM", "(int8 weights, dynamic activations)", "", ours, peer)
    quiet = db.get("BM_epoch_simplecnn_contended_quiet", threads=2)
    for case, setting in CONTENDED[1:]:
        e = db.get(f"BM_epoch_simplecnn_contended_{case}", threads=2)
        if e and quiet:
            rows.append(("SimpleCNN training epoch beside a busy loop on one CPU (contended)",
                         f"Fashion-MNIST, {epoch_images(db)}, 2 threads; {setting}", fmt_images(e),
                         "the same epoch on the quiet machine (same run)", fmt_images(quiet), ratio(quiet.time_s / e.time_s)))
    return rows


def int8_pairs(db, headline=False):
    """(tessera entry, oneDNN entry, n, threads) for bench_gemm_s8's benchmarks, whatever their family names: the
    oneDNN families carry 'dnnl' or 'onednn', the others are tessera's (one per instruction path and packing, told
    apart by their label). headline: per size and thread count only the fastest tessera variant that packs B on every
    call (prepacked:0 or no such argument), which is the work oneDNN's u8s8s32 GEMM does."""
    es = [e for e in db.entries if e.source == "gemm_s8" and "n" in e.args]
    peers = {(e.args["n"], e.args.get("threads")): e for e in es if series_of(e.family) == "oneDNN"}
    out = []
    for e in es:
        key = (e.args["n"], e.args.get("threads"))
        if series_of(e.family) == "tessera" and key in peers:
            if headline and e.args.get("prepacked", "0") != "0":
                continue
            out.append((e, peers[key], e.args["n"], e.args.get("threads", "?")))
    if headline:
        best = {}
        for r in out:
            k = (r[2], r[3])
            if k not in best or r[0].time_s < best[k][0].time_s:
                best[k] = r
        out = list(best.values())
    out.sort(key=lambda r: (r[0].family, int(r[3]) if r[3].isdigit() else 0, int(r[2]), r[0].label))
    return out


def epoch_images(db):
    return "3200 training images" if db.text("mode") == "quick" else "60k images"


def test_images(db):
    return "1000 test images" if db.text("mode") == "quick" else "10k test images"


# ---- detail tables --------------------------------------------------------------------------------------------------
def gemm_table(db, peak):
    rows = []
    fams = (("BM_tessera_sgemm", "tessera"), ("BM_openblas_sgemm", "OpenBLAS"), ("BM_onednn_sgemm", "oneDNN"),
            ("BM_eigen_sgemm", "Eigen"))
    present = [(f, l) for f, l in fams if db.family(f)]
    for t in (1, 2):
        for n in db.values("BM_tessera_sgemm", "n", threads=t):
            es = {l: db.get(f, n=n, threads=t) for f, l in present}
            g = {l: (e.rate("FLOP/s") if e else None) for l, e in es.items()}
            r = [f"{n}", f"{t}"] + [f"{g[l] / 1e9:.1f}" if g[l] else "—" for _, l in present]
            r += [ratio(g["tessera"] / g[l]) if g["tessera"] and g[l] else "—" for _, l in present[1:]]
            pk = peak.get(t)
            r.append(f"{100 * g['tessera'] / pk:.0f} %" if pk and g["tessera"] else "—")
            rows.append(r)
    header = ["n", "threads"] + [f"{l} GFLOP/s" for _, l in present] + [f"tessera / {l}" for _, l in present[1:]]
    return table(header + ["tessera, % of the FMA peak"], rows) if rows else ""


def elementwise_table(db):
    cols = (("BM_chain_fused", "chain fused", "t"), ("BM_chain_eager", "chain eager (tessera)", "t"),
            ("BM_chain_eigen", "chain Eigen", "t"), ("BM_torch_chain", "chain PyTorch", "t"),
            ("BM_arith_fused", "arith fused", "b"), ("BM_arith_eigen", "arith Eigen", "b"), ("BM_triad", "triad", "b"))
    present = [c for c in cols if db.family(c[0])]
    rows = []
    for t in (1, 2):
        for n in db.values("BM_chain_fused", "n", threads=t):
            r = [fmt_n(n), str(t)]
            for fam, _, kind in present:
                e = db.get(fam, n=n, threads=t)
                r.append("—" if e is None else fmt_time(e.time_s) if kind == "t" else
                         f"{e.rate('bytes_per_second') / 1e9:.1f}")
            rows.append(r)
    header = ["n (floats)", "threads"] + [f"{l}{' GB/s' if k == 'b' else ''}" for _, l, k in present]
    return table(header, rows) if rows else ""


def inference_table(db):
    rows = []
    for b in db.values("BM_simplecnn_inference", "batch"):
        r = [str(b)]
        for t in (1, 2):
            o, p = db.get("BM_simplecnn_inference", batch=b, threads=t), db.get("BM_torch_simplecnn_inference", batch=b, threads=t)
            oi, pi = (o.rate("items_per_second") if o else None), (p.rate("items_per_second") if p else None)
            r += [f"{oi:.0f}" if oi else "—", f"{pi:.0f}" if pi else "—", ratio(oi / pi) if oi and pi else "—"]
        rows.append(r)
    return table(["batch", "tessera, 1 thread (images/s)", "PyTorch, 1 thread", "ratio", "tessera, 2 threads",
                  "PyTorch, 2 threads", "ratio"], rows) if rows else ""


def threads_table(db):
    rows = []

    def add(workload, who, fam, **args):
        a, b = db.get(fam, threads=1, **args), db.get(fam, threads=2, **args)
        if a and b:
            rows.append((workload, who, fmt_time(a.time_s), fmt_time(b.time_s), ratio(a.time_s / b.time_s)))

    for fam, who in (("BM_tessera_sgemm", "tessera"), ("BM_openblas_sgemm", "OpenBLAS"), ("BM_onednn_sgemm", "oneDNN"),
                     ("BM_eigen_sgemm", "Eigen")):
        add("SGEMM 1024³", who, fam, n=1024)
    for fam, who in (("BM_chain_fused", "tessera"), ("BM_chain_eigen", "Eigen Tensor"), ("BM_torch_chain", "PyTorch"),
                     ("BM_triad", "triad loop")):
        add("chain, 16M floats" if who != "triad loop" else "triad, 16M floats", who, fam, n=16777216)
    add("Linear + bias + ReLU 256×1024 → 1024", "tessera", "BM_linear_bias_relu_fused")
    add("Linear + bias + ReLU 256×1024 → 1024", "PyTorch", "BM_torch_linear_bias_relu")
    add("SimpleCNN training step, batch 64", "tessera", "BM_simplecnn_train_step")
    add("SimpleCNN training step, batch 64", "PyTorch", "BM_torch_simplecnn_train_step")
    for b in (1, 64):
        add(f"SimpleCNN inference, batch {b}", "tessera", "BM_simplecnn_inference", batch=b)
        add(f"SimpleCNN inference, batch {b}", "PyTorch", "BM_torch_simplecnn_inference", batch=b)
    return table(["workload", "who", "1 thread", "2 threads", "speed-up"], rows) if rows else ""


def epochs_table(db, torch_name):
    rows = []
    for label, fam in (("SimpleCNN", "BM_epoch_simplecnn"), ("row LSTM", "BM_epoch_row_lstm")):
        for who, suffix in (("tessera", "_tessera"), (torch_name, "_torch")):
            e = db.get(fam + suffix, threads=2)
            if e:
                rows.append((label, who, f"{e.time_s:.1f} s", fmt_time(e.counters.get("inference_s")),
                             f"{e.counters['accuracy']:.2f} %" if "accuracy" in e.counters else "—"))
    for label, fam in (("SimpleCNN", "BM_epoch_simplecnn_tessera"), ("row LSTM", "BM_epoch_row_lstm_tessera")):
        e = db.get(fam, threads=2)
        if e and "int8_inference_s" in e.counters:
            c = e.counters
            rows.append((f"{label}, int8 (quantized after the epoch)", "tessera", "—", fmt_time(c["int8_inference_s"]) +
                         (f" (float in the same run: {fmt_time(c['float_inference_s'])})" if "float_inference_s" in c else ""),
                         f"{c['int8_accuracy']:.2f} %" if "int8_accuracy" in c else "—"))
    return table(["model", "who", "one training epoch", "inference over the test set", "test accuracy after it"],
                 rows) if rows else ""


# the contended workload's cases: (record name suffix, what was set); the first is the quiet reference
CONTENDED = (("quiet", "quiet machine, the library's defaults"),
             ("busy", "the library's defaults (adaptive team on, OpenMP's default wait policy)"),
             ("busy_fixed", "TESSERA_ADAPTIVE_THREADS=0 (the team stays at 2 threads)"),
             ("busy_fixed_passive", "TESSERA_ADAPTIVE_THREADS=0 and OMP_WAIT_POLICY=passive"))
CONTENDED_GOAL, CONTENDED_IDEAL = 0.4, 0.5  # of the quiet speed, beside one busy loop, with the library's defaults


def fmt_images(e):
    """An epoch's training speed: images/s as the program printed it, else its train time."""
    v = e.counters.get("items_per_s") if e else None
    return f"{v:.0f} images/s" if v else fmt_time(e.time_s if e else None)


def contended_table(db):
    quiet = db.get("BM_epoch_simplecnn_contended_quiet", threads=2)
    rows = []
    for case, setting in CONTENDED:
        e = db.get(f"BM_epoch_simplecnn_contended_{case}", threads=2)
        if e:
            rows.append(("quiet" if case == "quiet" else "beside the busy loop", setting, f"{e.time_s:.1f} s", fmt_images(e),
                         ratio(quiet.time_s / e.time_s) if quiet else "—"))
    return table(["machine", "setting", "training epoch", "training speed", "speed / quiet"], rows) if rows else ""


def int8_table(db):
    rows = [(o.family.removeprefix("BM_"), o.label or "/".join(f"{k}:{v}" for k, v in o.args.items() if k not in ("n", "threads")),
             n, t, fmt_rate(o.rate(counter_key(o)), counter_key(o)), fmt_rate(p.rate(counter_key(p)), counter_key(p)),
             ratio(p.time_s / o.time_s)) for o, p, n, t in int8_pairs(db)]
    return table(["tessera benchmark", "path", "n", "threads", "tessera", "oneDNN u8s8s32", "tessera / oneDNN"], rows) if rows else ""
