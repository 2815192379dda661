# bench/compare.d/tables_compress.py: the section of a bench/compare block for issue 20's workloads — fewer weights
# (prune: structured pruning of the SimpleCNN, the sparse Linear against the dense one), fewer bits (qat: quantization-
# aware training against post-training int8; bf16: the bf16 GEMM against our fp32 GEMM and oneDNN's bf16 matmul) and
# batching (serve: the dynamic batcher against offline batches and against clients running alone). Each row carries
# its goal from the issue and whether this run met it. Figures come from the results database (results.DB): the Google
# Benchmark binaries' JSON and the "result NAME k=v ..." lines of the two training programs (records.tsv). A part
# without figures is left out; compress_section is [] when all are. Standard library only.
from tables import fmt_rate, fmt_time, ratio, table


def _met(value, goal, above=True):
    if value is None:
        return "—"
    return "met" if (value >= goal if above else value <= goal) else "**not met**"


def _pct(v):
    return "—" if v is None else f"{v:.2f} %"


def prune_rows(db):
    rows = []
    e = db.get("BM_prune_structured", threads=2)
    if e:
        c = e.counters
        ua, pa = c.get("unpruned_accuracy"), c.get("pruned_accuracy")
        ui, pi = c.get("unpruned_inference_s"), c.get("pruned_inference_s")
        if ua is not None and pa is not None:
            rows.append(("structured pruning: test accuracy, unpruned → half the channels, fine-tuned 1 epoch",
                         f"{_pct(ua)} → {_pct(pa)}", "within 1.0 point", _met(pa - ua, -1.0)))
        if ui and pi:
            rows.append(("structured pruning: inference over the test set, unpruned → pruned",
                         f"{fmt_time(ui)} → {fmt_time(pi)} ({ratio(ui / pi)})", "≥ 1.8×", _met(ui / pi, 1.8)))
    dense = db.get("BM_dense_linear", threads=2)
    for s in (70, 80, 90, 95):
        sp = db.get("BM_sparse_linear", sparsity=s, threads=2)
        if sp and dense:
            r = dense.time_s / sp.time_s
            rows.append((f"sparse Linear 1024 → 1024, batch 64, {s} % zeros, against the dense fused Linear",
                         f"{fmt_time(sp.time_s)} against {fmt_time(dense.time_s)} ({ratio(r)})",
                         "≥ 2.5×" if s == 90 else "", _met(r, 2.5) if s == 90 else ""))
    return rows


def qat_rows(db):
    e = db.get("BM_qat_simplecnn", threads=2)
    if not e:
        return []
    c = e.counters
    f, p, q = c.get("float_accuracy"), c.get("ptq_accuracy"), c.get("qat_accuracy")
    if None in (f, p, q):
        return []
    return [("QAT: test accuracy, float / post-training int8 / QAT int8", f"{_pct(f)} / {_pct(p)} / {_pct(q)}",
             "QAT ≥ PTQ and within 0.2 points of float", "met" if q >= p and q >= f - 0.2 else "**not met**")]


def amp_rows(db):
    e = db.get("BM_amp_simplecnn", threads=2)
    if not e:
        return []
    c = e.counters
    a32, a16, t32, t16 = c.get("fp32_accuracy"), c.get("bf16_accuracy"), c.get("fp32_epoch_s"), c.get("bf16_epoch_s")
    if None in (a32, a16, t32, t16) or t16 <= 0:
        return []
    native = c.get("bf16_native") == 1
    return [("mixed precision (bf16 autocast): SimpleCNN test accuracy after the run's epochs, fp32 → bf16",
             f"{_pct(a32)} → {_pct(a16)}", "≥ 90.0 % and within 0.3 points (3 epochs)",
             "met" if a16 >= 90.0 and a16 >= a32 - 0.3 else "**not met**"),
            ("mixed precision: training epoch, fp32 → bf16" + ("" if native else " (no AVX512-BF16: bf16 widened to fp32)"),
             f"{fmt_time(t32)} → {fmt_time(t16)} ({ratio(t32 / t16)})", "≥ 1.4× with AVX512-BF16",
             _met(t32 / t16, 1.4) if native else "n/a on this CPU")]


def bf16_rows(db):
    rows = []
    for n in db.values("BM_tessera_gemm_bf16", "n", threads=2):
        b = db.get("BM_tessera_gemm_bf16", n=n, threads=2)
        f = db.get("BM_tessera_sgemm_ref", n=n, threads=2)
        o = db.get("BM_onednn_gemm_bf16", n=n, threads=2)
        path = (b.label or "") if b else ""
        if b and f:
            rows.append((f"bf16 GEMM {n}³ ({path or 'path not recorded'}) against our fp32 GEMM",
                         f"{fmt_rate(b.rate('FLOP/s'), 'FLOP/s')} against {fmt_rate(f.rate('FLOP/s'), 'FLOP/s')} "
                         f"({ratio(f.time_s / b.time_s)})", "≥ 1.8× with AVX512-BF16",
                         _met(f.time_s / b.time_s, 1.8) if "avx512" in path or "amx" in path else "n/a on this CPU"))
        if b and o:
            rows.append((f"bf16 GEMM {n}³ against oneDNN's bf16 matmul",
                         f"{fmt_rate(b.rate('FLOP/s'), 'FLOP/s')} against {fmt_rate(o.rate('FLOP/s'), 'FLOP/s')} "
                         f"({ratio(o.time_s / b.time_s)})", "≥ 0.9×", _met(o.time_s / b.time_s, 0.9)))
    return rows


def serve_rows(db):
    b, off, d = db.get("BM_serve_batcher_clients64"), db.get("BM_serve_offline_batch64"), db.get("BM_serve_direct_clients64")
    key = "items_per_second"
    if not b or b.rate(key) is None:
        return []
    rows = []
    lat = ""
    if b.rate("p50_us") is not None and b.rate("p99_us") is not None:
        lat = f"; latency p50 {b.rate('p50_us') / 1e3:.2f} ms, p99 {b.rate('p99_us') / 1e3:.2f} ms"
    if off and off.rate(key):
        r = b.rate(key) / off.rate(key)
        rows.append(("batcher, 64 client threads sending single images (int8 SimpleCNN), against offline batches of 64",
                     f"{fmt_rate(b.rate(key), key)} against {fmt_rate(off.rate(key), key)} ({ratio(r)}){lat}", "≥ 0.8×",
                     _met(r, 0.8)))
    if d and d.rate(key):
        r = b.rate(key) / d.rate(key)
        rows.append(("batcher against the same 64 clients each running its image at batch 1",
                     f"{fmt_rate(b.rate(key), key)} against {fmt_rate(d.rate(key), key)} ({ratio(r)})", "≥ 2×", _met(r, 2.0)))
    return rows


def compress_section(db):
    """The Markdown lines of the section (a list; [] when no part was measured)."""
    rows = prune_rows(db) + qat_rows(db) + amp_rows(db) + bf16_rows(db) + serve_rows(db)
    if not rows:
        return []
    return ["### Fewer weights, fewer bits, batching (prune, qat, amp, bf16, serve)", "",
            "`examples/prune_simplecnn` (train, prune half of each layer's channels by L1 norm, shrink, fine-tune one "
            "epoch), `bench_sparse`, `examples/qat_simplecnn` (train, post-training int8, one epoch of quantization-aware "
            "training, convert), `examples/amp_simplecnn` (fp32 and bf16 mixed-precision training, epochs alternating), "
            "`bench_gemm_bf16`, `bench_serve`; 2 threads.", "",
            table(["what", "figure", "goal", "this run"], rows), ""]
