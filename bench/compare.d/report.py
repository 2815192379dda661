# The report half of bench/compare: reads what the run left in its results folder (Google Benchmark JSON from the
# C++ benchmarks and from bench/torch_peers.py, records.tsv from the training epochs, steps.tsv, notes, gpu.txt,
# cpuinfo, env), writes the tables and the gnuplot PNGs, and replaces the block of docs/performance.md that belongs
# to the run's CPU kind (markers below; blocks of other kinds are left as they are, a new kind's block goes after the
# last one). Every figure it writes comes from that folder. Standard library only (Debian's /usr/bin/python3).
#   report.py --results DIR --build-dir DIR [--doc docs/performance.md] --img DIR   (without --doc: tables to stdout;
#                                                 with it, the plots go to DIR/<kind>, e.g. docs/img/amd-zen-3)
#   report.py --cpu-kind [CPUINFO]                the CPU kind's name ("AMD Zen 3") from /proc/cpuinfo or a copy
#   report.py --arg-values FILE.json KEY          the values of one benchmark argument, comma-separated
#   report.py --subset-idx SRC DST NTRAIN NTEST   the first images of Fashion-MNIST (quick mode's small epochs)
# A table row is one line in summary_rows() (or a column in a detail table); a benchmark's name is parsed into its
# family (before the first '/') and its named arguments (n:1024/threads:2), which is how rows find their figures.
import argparse, gzip, json, os, re, shutil, statistics, struct, subprocess, sys

# A block per CPU kind: "<!-- bench/compare begin: AMD Zen 3 -->" ... "<!-- bench/compare end: AMD Zen 3 -->" (an
# older unnamed pair, "<!-- bench/compare begin -->" ... "<!-- bench/compare end -->", is kept as it is). A marker is
# a line of its own: the same text quoted inside a paragraph is not one.
BEGIN_RE = re.compile(r"^<!-- bench/compare begin(?:: (.+?))? -->[ \t]*$", re.M)


def begin_marker(kind):
    return f"<!-- bench/compare begin: {kind} -->" if kind else "<!-- bench/compare begin -->"


def end_marker(kind):
    return f"<!-- bench/compare end: {kind} -->" if kind else "<!-- bench/compare end -->"


REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")  # the repository (git, include/)
UNIT_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


# ---- the CPU kind ---------------------------------------------------------------------------------------------------
# Figures from different CPU kinds are not comparable (cores, vector units, the kernel paths that run), so every kind
# has its own block in the document. The kind comes from the first processor of /proc/cpuinfo as the run saw it
# (bench/compare copies it to the results folder as `cpuinfo`): vendor, family and model, named after Linux's tables
# (arch/x86/kernel/cpu/amd.c for the Zen generations, intel-family.h for Intel's family 6); anything else is
# "<vendor> family F model M (<vector ISA>)".
AMD_ZEN = {  # family: [(first model, last model, name)]
    0x17: [(0x00, 0x2f, "Zen"), (0x50, 0x5f, "Zen"), (0x30, 0x4f, "Zen 2"), (0x60, 0x7f, "Zen 2"), (0x90, 0x91, "Zen 2"),
           (0xa0, 0xaf, "Zen 2")],
    0x19: [(0x00, 0x0f, "Zen 3"), (0x20, 0x5f, "Zen 3"), (0x10, 0x1f, "Zen 4"), (0x60, 0xaf, "Zen 4")],
    0x1a: [(0x00, 0x0f, "Zen 5"), (0x20, 0x2f, "Zen 5"), (0x40, 0x4f, "Zen 5"), (0x70, 0x7f, "Zen 5")],
}
INTEL_FAM6 = {0x3c: "Haswell", 0x45: "Haswell", 0x46: "Haswell", 0x3f: "Haswell-EP", 0x3d: "Broadwell", 0x47: "Broadwell",
              0x4f: "Broadwell-EP", 0x56: "Broadwell-DE", 0x4e: "Skylake", 0x5e: "Skylake", 0x8e: "Kaby Lake",
              0x9e: "Coffee Lake", 0xa5: "Comet Lake", 0xa6: "Comet Lake", 0x7d: "Ice Lake", 0x7e: "Ice Lake",
              0x6a: "Ice Lake-SP", 0x6c: "Ice Lake-SP", 0x8c: "Tiger Lake", 0x8d: "Tiger Lake", 0xa7: "Rocket Lake",
              0x97: "Alder Lake", 0x9a: "Alder Lake", 0xb7: "Raptor Lake", 0xba: "Raptor Lake", 0xbf: "Raptor Lake",
              0xaa: "Meteor Lake", 0xac: "Meteor Lake", 0xc5: "Arrow Lake", 0xc6: "Arrow Lake", 0xbd: "Lunar Lake",
              0x8f: "Sapphire Rapids", 0xcf: "Emerald Rapids", 0xad: "Granite Rapids", 0xae: "Granite Rapids",
              0xaf: "Sierra Forest"}


def cpuinfo_fields(text):
    """The first processor's fields of a /proc/cpuinfo text (the lines up to the first blank one)."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        k, sep, v = line.partition(":")
        if sep:
            out.setdefault(k.strip(), v.strip())
    return out


def vector_isa(flags):
    """The widest vector instruction set in a flags set, in words ("AVX-512 + AMX", "AVX2", ...)."""
    if "avx512f" in flags:
        return "AVX-512" + (" + AMX" if "amx_tile" in flags else "")
    for flag, name in (("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"), ("sve", "SVE"), ("asimd", "NEON")):
        if flag in flags:
            return name
    return "no vector flags"


def cpu_kind(fields):
    """The CPU kind's name ("AMD Zen 3", "Intel Sapphire Rapids", or the fallback) from cpuinfo_fields()."""
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vendor_id = fields.get("vendor_id", "")
    try:
        fam, model = int(fields.get("cpu family", "")), int(fields.get("model", ""))
    except ValueError:
        fam = model = None
    if vendor_id in ("AuthenticAMD", "HygonGenuine") or vendor_id == "GenuineIntel":
        vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel", "HygonGenuine": "Hygon"}[vendor_id]
        if vendor == "AMD" and fam is not None:
            for lo, hi, name in AMD_ZEN.get(fam, []):
                if lo <= model <= hi:
                    return f"AMD {name}"
        if vendor == "Intel" and fam == 6 and model in INTEL_FAM6:
            return f"Intel {INTEL_FAM6[model]}"
        if vendor == "Intel" and fam == 6 and model == 0x55:
            return "Intel " + ("Cooper Lake" if "avx512_bf16" in flags else "Cascade Lake" if "avx512_vnni" in flags
                               else "Skylake-SP")
        return f"{vendor} family {fam} model {model} ({vector_isa(flags)})"
    if "CPU implementer" in fields:  # Arm: no family/model, an implementer and a part number
        return f"Arm implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')} ({vector_isa(flags)})"
    return f"{vendor_id or os.uname().machine} family {fam if fam is not None else '?'} model " \
           f"{model if model is not None else '?'} ({vector_isa(flags)})"


def kind_slug(kind):
    """A folder name for the kind's plots: "AMD Zen 3" -> "amd-zen-3"."""
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "cpu"


def run_cpuinfo(results):
    """The cpuinfo fields of the run: the copy bench/compare made in the results folder, else this machine's."""
    for p in ((os.path.join(results, "cpuinfo"),) if results else ()) + ("/proc/cpuinfo",):
        try:
            f = cpuinfo_fields(open(p).read())
        except OSError:
            continue
        if f:
            return f
    return {}


# ---- loading --------------------------------------------------------------------------------------------------------
class Entry:
    def __init__(self, source, name, time_s, counters, label=""):
        self.source, self.name, self.time_s, self.counters, self.label = source, name, time_s, counters, label
        parts = [p for p in name.split("/") if p not in ("real_time", "manual_time", "process_time")]
        self.family = parts[0]
        self.args, self.pos = {}, []
        for p in parts[1:]:
            k, sep, v = p.partition(":")
            if sep:
                self.args[k] = v
            else:
                self.pos.append(p)

    def rate(self, key):
        return self.counters.get(key)


def load_gbench(path):
    src = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
        doc = json.load(f)
    runs = doc.get("benchmarks", [])
    medians = {b["run_name"] for b in runs if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median"}
    out = []
    for b in runs:
        if b.get("error_occurred") or b.get("skipped"):
            continue
        run = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") != "median":
                continue
        elif run in medians:
            continue
        skip = {"name", "run_name", "run_type", "repetitions", "repetition_index", "threads", "iterations", "real_time",
                "cpu_time", "time_unit", "family_index", "per_family_instance_index", "aggregate_name",
                "aggregate_unit", "label"}
        counters = {k: v for k, v in b.items() if k not in skip and isinstance(v, (int, float))}
        out.append(Entry(src, run, b["real_time"] * UNIT_S[b.get("time_unit", "ns")], counters, b.get("label", "")))
    return out, doc.get("context", {})


def load_records(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            f = line.rstrip("\n").split("\t")
            if len(f) < 2 or not f[1]:
                continue
            counters = {}
            for kv in (f[2].split() if len(f) > 2 else []):
                k, _, v = kv.partition("=")
                try:
                    counters[k] = float(v)
                except ValueError:
                    pass
            out.append(Entry("records", f[0], float(f[1]), counters))
    return out


class DB:
    def __init__(self, results):
        self.results, self.entries, self.contexts = results, [], {}
        for name in sorted(os.listdir(results)):
            if name.endswith(".json"):
                try:
                    e, ctx = load_gbench(os.path.join(results, name))
                except (OSError, ValueError, KeyError) as err:
                    print(f"report: {name} unreadable ({err}), left out", file=sys.stderr)
                    continue
                self.entries += e
                self.contexts[name[:-5]] = ctx
        self.entries += load_records(os.path.join(results, "records.tsv"))

    def get(self, family, **args):
        want = {k: str(v) for k, v in args.items()}
        for e in self.entries:
            if e.family == family and all(e.args.get(k) == v for k, v in want.items()):
                return e
        return None

    def family(self, family, source=None):
        return [e for e in self.entries if e.family == family and (source is None or e.source == source)]

    def values(self, family, key, **args):
        """Sorted numeric values of argument `key` among a family's entries matching args."""
        vals = set()
        for e in self.family(family):
            if key in e.args and all(e.args.get(k) == str(v) for k, v in args.items()):
                vals.add(int(e.args[key]))
        return sorted(vals)

    def text(self, name):
        p = os.path.join(self.results, name)
        return open(p).read().strip() if os.path.exists(p) else ""


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
    row("SimpleCNN data-parallel epoch (fashion_mnist_ddp)", f"Fashion-MNIST, 2 ranks × 1 thread, batch 32 per rank", d2,
        f"{torch_name} DistributedDataParallel (gloo)", db.get("BM_epoch_ddp_torch", ranks=2, threads=1))
    if d1 and d2:
        rows.append(("SimpleCNN data-parallel scaling efficiency (1 rank's time / (2 × 2 ranks' time))",
                     "2 ranks against 1 rank × 1 thread, batch 32 per rank", fmt_time(d2.time_s), "1 rank × 1 thread (same run)",
                     fmt_time(d1.time_s), f"{d1.time_s / (2 * d2.time_s):.2f}"))
    ours, peer = db.get("BM_epoch_simplecnn_tessera", threads=2), db.get("BM_epoch_simplecnn_torch", threads=2)
    row("SimpleCNN training epoch", f"Fashion-MNIST, {epoch_images(db)}, batch 64, 2 threads", ours, torch_name, peer)
    if ours and peer and "inference_s" in ours.counters and "inference_s" in peer.counters:
        o, p = ours.counters["inference_s"], peer.counters["inference_s"]
        rows.append(("SimpleCNN inference over the test set", f"{test_images(db)} (tessera in batches of 500, PyTorch in one), 2 threads", fmt_time(o), torch_name,
                     fmt_time(p), ratio(p / o)))
    if ours and "int8_inference_s" in ours.counters and "float_inference_s" in ours.counters:
        q, f = ours.counters["int8_inference_s"], ours.counters["float_inference_s"]
        rows.append(("SimpleCNN int8 inference over the test set (quantized after the epoch)", f"{test_images(db)}, 2 threads",
                     fmt_time(q), "tessera float (same run)", fmt_time(f), ratio(f / q)))
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
    if ours and peer and "inference_s" in ours.counters and "inference_s" in peer.counters:
        o, p = ours.counters["inference_s"], peer.counters["inference_s"]
        rows.append(("row-LSTM inference over the test set", f"{test_images(db)}, 2 threads", fmt_time(o), torch_name,
                     fmt_time(p), ratio(p / o)))
    if ours and "int8_inference_s" in ours.counters and "float_inference_s" in ours.counters:
        q, f = ours.counters["int8_inference_s"], ours.counters["float_inference_s"]
        rows.append(("row-LSTM int8 inference over the test set (int8 weights, dynamic activations)",
                     f"{test_images(db)}, 2 threads", fmt_time(q), "tessera float (same run)", fmt_time(f), ratio(f / q)))
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


# ---- plots ----------------------------------------------------------------------------------------------------------
class Plotter:
    def __init__(self, workdir, imgdir):
        self.workdir, self.imgdir = workdir, imgdir
        os.makedirs(workdir, exist_ok=True)
        os.makedirs(imgdir, exist_ok=True)
        self.gnuplot = shutil.which("gnuplot")
        self.term = "png"
        if self.gnuplot and subprocess.run([self.gnuplot, "-e", "set terminal pngcairo"], capture_output=True).returncode == 0:
            self.term = "pngcairo"
        self.made = []

    def data(self, name, points):
        p = os.path.join(self.workdir, name + ".dat")
        with open(p, "w") as f:
            for row in points:
                f.write(" ".join(str(v) for v in row) + "\n")
        return p

    def render(self, name, script, width=1200, height=460):
        if not self.gnuplot:
            return None
        out = os.path.join(self.imgdir, name + ".png")
        term = (f"set terminal pngcairo size {width},{height} font 'DejaVu Sans,10' noenhanced" if self.term == "pngcairo"
                else f"set terminal png size {width},{height} noenhanced")
        gp = os.path.join(self.workdir, name + ".gp")
        with open(gp, "w") as f:
            f.write(f"{term}\nset output '{out}'\nset grid\nset key top left\n{script}\nunset output\n")
        r = subprocess.run([self.gnuplot, gp], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"report: gnuplot failed on {gp}: {r.stderr.strip()}", file=sys.stderr)
            return None
        self.made.append(name + ".png")
        return name + ".png"

    def lines(self, series, x=1, y=2):
        """plot clauses for [(label, datafile, style)] with data."""
        return ", ".join(f"'{p}' using {x}:{y} with linespoints {st} title '{l}'" for l, p, st in series)


STYLE = {"tessera": "lw 2.5 pt 7 lc rgb '#d62728'", "OpenBLAS": "lw 1.5 pt 5 lc rgb '#1f77b4'",
         "oneDNN": "lw 1.5 pt 9 lc rgb '#2ca02c'", "Eigen": "lw 1.5 pt 11 lc rgb '#9467bd'",
         "PyTorch": "lw 1.5 pt 13 lc rgb '#ff7f0e'", "cuBLAS": "lw 1.5 pt 5 lc rgb '#1f77b4'"}


def plot_gemm(db, pl, peak):
    fams = (("BM_tessera_sgemm", "tessera"), ("BM_openblas_sgemm", "OpenBLAS"), ("BM_onednn_sgemm", "oneDNN"),
            ("BM_eigen_sgemm", "Eigen"))
    panels = []
    for t in (1, 2):
        series = []
        for fam, label in fams:
            pts = [(n, db.get(fam, n=n, threads=t).rate("FLOP/s") / 1e9) for n in db.values(fam, "n", threads=t)]
            if pts:
                series.append((label, pl.data(f"gemm_{fam}_{t}", pts), STYLE[label]))
        if not series:
            continue
        plot = pl.lines(series)
        if peak.get(t):
            plot += f", {peak[t] / 1e9:.1f} with lines dt 2 lw 2 lc rgb 'black' title 'measured FMA peak ({peak[t] / 1e9:.0f})'"
        panels.append(f"set title 'SGEMM, square n x n x n, {t} thread{'s' if t > 1 else ''}'\nplot {plot}")
    if not panels:
        return None
    return pl.render("gemm", "set logscale x 2\nset xlabel 'n'\nset ylabel 'GFLOP/s'\nset yrange [0:*]\n"
                     "set key bottom right\n" f"set multiplot layout 1,{len(panels)}\n" + "\n".join(panels) + "\nunset multiplot")


def plot_elementwise(db, pl):
    fams = (("BM_chain_fused", "tessera chain, fused", STYLE["tessera"]),
            ("BM_arith_fused", "tessera 1.5x+2.5y+3.5z", "lw 2 pt 6 dt 3 lc rgb '#d62728'"),
            ("BM_chain_eager", "tessera chain, eager", "lw 1 pt 4 dt 2 lc rgb '#e377c2'"),
            ("BM_chain_eigen", "Eigen Tensor chain", STYLE["Eigen"]),
            ("BM_arith_eigen", "Eigen Tensor 1.5x+2.5y+3.5z", "lw 1 pt 10 dt 3 lc rgb '#9467bd'"),
            ("BM_torch_chain", "PyTorch eager chain", STYLE["PyTorch"]),
            ("BM_triad", "triad loop (c = a + 1.5 b)", "lw 2 pt 1 dt 2 lc rgb 'black'"))
    panels = []
    for t in (1, 2):
        series = []
        for fam, label, st in fams:
            pts = [(n, db.get(fam, n=n, threads=t).rate("bytes_per_second") / 1e9) for n in db.values(fam, "n", threads=t)]
            if pts:
                series.append((label, pl.data(f"ew_{fam}_{t}", pts), st))
        if series:
            panels.append(f"set title 'Elementwise, {t} thread{'s' if t > 1 else ''}; x: n floats per array'\nplot {pl.lines(series)}")
    if not panels:
        return None
    ns = sorted({n for fam, _, _ in fams for t in (1, 2) for n in db.values(fam, "n", threads=t)})
    tics = ", ".join(f"'{fmt_n(n)}' {n}" for n in ns)
    return pl.render("elementwise", f"set logscale x 2\nset xtics ({tics})\nset xrange [{ns[0] / 1.5}:{ns[-1] * 1.5}]\n"
                     "set ylabel 'GB/s (each array read once, the result written once)'\nset yrange [0:*]\n"
                     "set key outside bottom center horizontal maxrows 3 font ',9'\n"
                     f"set multiplot layout 1,{len(panels)}\n" + "\n".join(panels) + "\nunset multiplot", 1200, 560)


def plot_inference(db, pl):
    series = []
    for fam, who in (("BM_simplecnn_inference", "tessera"), ("BM_torch_simplecnn_inference", "PyTorch")):
        for t in (1, 2):
            pts = [(b, db.get(fam, batch=b, threads=t).rate("items_per_second")) for b in db.values(fam, "batch", threads=t)
                   if b <= 256]
            if pts:
                st = STYLE[who] + (" dt 2" if t == 1 else "")
                series.append((f"{who}, {t} thread{'s' if t > 1 else ''}", pl.data(f"inf_{fam}_{t}", pts), st))
    if not series:
        return None
    return pl.render("inference", "set title 'SimpleCNN inference throughput against batch size'\nset logscale x 2\n"
                     "set xlabel 'batch'\nset ylabel 'images/s'\nset yrange [0:*]\n" f"plot {pl.lines(series)}", 800, 460)


def plot_epochs(db, pl, torch_name):
    rows = []
    for label, fam in (("SimpleCNN", "BM_epoch_simplecnn"), ("row LSTM", "BM_epoch_row_lstm")):
        o, p = db.get(fam + "_tessera", threads=2), db.get(fam + "_torch", threads=2)
        if o or p:
            rows.append((f'"{label}"', o.time_s if o else "?", p.time_s if p else "?"))
    o, p = db.get("BM_epoch_simplecnn_tessera_cuda"), db.get("BM_epoch_simplecnn_torch_cuda")
    if o or p:
        rows.append(('"SimpleCNN on the GPU"', o.time_s if o else "?", p.time_s if p else "?"))
    if not rows:
        return None
    d = pl.data("epochs", rows)
    return pl.render("epochs", f"set title 'One training epoch ({epoch_images(db)}, batch 64, 2 threads), seconds'\n"
                     "set datafile missing '?'\nset style data histograms\nset style histogram clustered gap 1\n"
                     "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset yrange [0:*]\nset ylabel 's'\n"
                     "set key top left\nset grid ytics\nunset xtics\nset xtics nomirror\n"
                     f"plot '{d}' using 2:xtic(1) title 'tessera' lc rgb '#d62728', '' using 3 title '{torch_name}' lc rgb '#ff7f0e', "
                     f"'' using ($0-0.17):2:(sprintf('%.1f s', $2)) with labels offset 0,0.8 notitle, "
                     f"'' using ($0+0.17):3:(sprintf('%.1f s', $3)) with labels offset 0,0.8 notitle", 800, 460)


def plot_int8(db, pl):
    series = []
    es = [e for e in db.entries if e.source == "gemm_s8" and "n" in e.args and counter_key(e)]
    groups = {}
    for e in es:
        groups.setdefault((e.family, e.label, e.args.get("threads", "?")), []).append((int(e.args["n"]), e.rate(counter_key(e)) / 1e9))
    colours = ["#d62728", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    variants = sorted({(f, l) for f, l, _ in groups if series_of(f) == "tessera"})
    for i, ((fam, label, t), pts) in enumerate(sorted(groups.items())):
        who = series_of(fam)
        if who == "tessera":
            st = f"lw 2 pt 7 lc rgb '{colours[variants.index((fam, label)) % len(colours)]}'"
        else:
            st = STYLE.get(who, "lw 1.5")
        st += " dt 2" if t == "1" else ""
        name = f"{who}{' ' + label if label else ''}, {t} thread{'s' if t != '1' else ''}"
        series.append((name, pl.data(f"s8_{fam}_{i}", sorted(pts)), st))
    if not series:
        return None
    return pl.render("gemm_s8", "set title 'int8 GEMM (u8 x s8 -> s32), square n; dashed: 1 thread'\nset logscale x 2\n"
                     "set xlabel 'n'\nset ylabel 'GOP/s'\nset yrange [0:*]\nset key outside right font ',8'\n"
                     f"plot {pl.lines(series)}", 1000, 460)


def plot_gpu(db, pl):
    series = []
    for fam, who in (("BM_sgemm_tessera", "tessera"), ("BM_sgemm_cublas", "cuBLAS"), ("BM_torch_cuda_sgemm", "PyTorch")):
        pts = sorted((int(e.pos[0]), e.rate("TFLOP/s")) for e in db.family(fam) if e.pos and e.rate("TFLOP/s"))
        if pts:
            series.append((who, pl.data(f"gpu_{fam}", pts), STYLE[who]))
    if not series:
        return None
    return pl.render("gpu_gemm", "set title 'SGEMM on the GPU (FP32), square n'\nset logscale x 2\nset xlabel 'n'\n"
                     "set ylabel 'TFLOP/s'\nset yrange [0:*]\nset key bottom right\n" f"plot {pl.lines(series)}", 800, 460)


# ---- machine ----------------------------------------------------------------------------------------------------------
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def pkg(name):
    v = sh("dpkg-query", "-W", "-f=${Version}", name)
    return v.split("+")[0].split("-")[0] if v else ""


def compiler(build_dir):
    cache = os.path.join(build_dir, "CMakeCache.txt")
    m = re.search(r"^CMAKE_CXX_COMPILER:\w+=(.+)$", open(cache).read(), re.M) if os.path.exists(cache) else None
    return m.group(1) if m else ""


def int8_path(db, flags):
    """The int8 GEMM path that ran, and who said so: bench_gemm_s8's context, else the line an example printed
    ("int8 (kernels: X)"), else what the CPU flags imply (the rule of tessera's int8_isa_supported())."""
    ctx = db.contexts.get("gemm_s8", {}).get("int8_path")
    if ctx:
        return f"{ctx} (bench_gemm_s8's default path)"
    said = db.text("int8_kernels").split()
    if said:
        return f"{said[0]} (printed by {said[1] if len(said) > 1 else 'an example'})"
    guess = ("amx" if {"amx_tile", "amx_int8", "avx512bw", "avx512_vnni"} <= flags else
             "avx512_vnni" if {"avx512f", "avx512bw", "avx512_vnni"} <= flags else "avx2" if "avx2" in flags else "portable")
    return f"{guess} (what the CPU flags imply; no int8 program ran)"


def build_isa(build_dir):
    """What -march the build used and the vector extensions it enables, from the build's compiler and cache."""
    cache = os.path.join(build_dir, "CMakeCache.txt")
    text = open(cache).read() if os.path.exists(cache) else ""
    native = re.search(r"^TESSERA_NATIVE:\w+=(\w+)", text, re.M)
    if native and native.group(1).upper() in ("OFF", "0", "FALSE", "NO"):
        return "the compiler's default target (TESSERA_NATIVE=OFF: no -march)"
    cxx = compiler(build_dir)
    if not cxx:
        return "-march=native (no CMake cache to ask the compiler)"
    march = re.search(r"^\s*-march=\s*(\S+)", sh(cxx, "-march=native", "-Q", "--help=target"), re.M)
    macros = set(re.findall(r"#define (__\w+__) 1", sh(cxx, "-march=native", "-dM", "-E", "-x", "c++", "/dev/null")))
    names = [n for m, n in (("__AVX2__", "AVX2"), ("__FMA__", "FMA"), ("__AVX512F__", "AVX-512F"), ("__AVX512BW__", "BW"),
                            ("__AVX512VNNI__", "VNNI"), ("__AVXVNNI__", "AVX-VNNI"), ("__AVX512BF16__", "AVX-512 BF16"),
                            ("__AVX512FP16__", "AVX-512 FP16"), ("__AMX_INT8__", "AMX-INT8"), ("__AMX_BF16__", "AMX-BF16"))
             if m in macros]
    isa = ", ".join(names) + ("" if "AVX-512F" in names else "; no AVX-512") if names else "no AVX2"
    return f"-march=native ({march.group(1) if march else '?'} to this compiler): {isa}"


def bf16_path():
    """tessera has no bf16 kernels yet (bfloat16 is a storage type): say so until a kernel header mentions bf16."""
    root = os.path.join(REPO, "include", "tessera", "kernels")
    found = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith((".hpp", ".cuh")) and re.search(r"bf16|bfloat16", open(os.path.join(d, f), errors="replace").read()):
                found.append(os.path.relpath(os.path.join(d, f), REPO))
    return f"kernels in {', '.join(sorted(found))} (report.py does not name their path yet)" if found else "none (no bf16 kernels yet)"


def threads_setting(db):
    """The OpenMP wait policy and the adaptive team of the run (bench/compare's copy of its environment)."""
    env = dict(l.split("=", 1) for l in db.text("env").splitlines() if "=" in l)
    wp = env.get("OMP_WAIT_POLICY")
    out = [f"OMP_WAIT_POLICY={wp}" if wp else "OMP_WAIT_POLICY unset (libgomp: spin about 300k iterations, then sleep)"]
    if env.get("GOMP_SPINCOUNT"):
        out.append(f"GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']}")
    at = env.get("TESSERA_ADAPTIVE_THREADS")
    out.append(f"TESSERA_ADAPTIVE_THREADS={at} (adaptive team {'off' if at == '0' else 'on'})" if at is not None
               else "TESSERA_ADAPTIVE_THREADS unset (adaptive team on)")
    if env.get("OMP_NUM_THREADS"):
        out.append(f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    if "contended" in db.text("workloads").split():
        out.append("the contended workload sets its own per case")
    return ", ".join(out)


def kernel_paths(db, build_dir, flags):
    env = dict(l.split("=", 1) for l in db.text("env").splitlines() if "=" in l)
    cap = f", capped by TESSERA_INT8_ISA={env['TESSERA_INT8_ISA']}" if env.get("TESSERA_INT8_ISA") else ""
    return (f"int8 GEMM: {int8_path(db, flags)}{cap}; bf16: {bf16_path()}; build: {build_isa(build_dir)}; "
            f"threads: {threads_setting(db)}")


def machine(db, build_dir, peak):
    lscpu = {}
    for line in sh("lscpu").splitlines():
        k, _, v = line.partition(":")
        lscpu[k.strip()] = v.strip()
    flags = set(run_cpuinfo(db.results).get("flags", "").split())
    wanted = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"]
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        mem = f"{kb / 1048576:.1f} GiB"
    except (OSError, AttributeError):
        pass
    osname = ""
    try:
        osname = re.search(r'PRETTY_NAME="([^"]+)"', open("/etc/os-release").read()).group(1)
    except (OSError, AttributeError):
        pass
    cxx, cxx_path = "", compiler(build_dir)
    if cxx_path:
        cxx = sh(cxx_path, "--version").splitlines()[0] if sh(cxx_path, "--version") else ""
    cpus = lscpu.get("CPU(s)", str(os.cpu_count()))
    topo = f"{lscpu.get('Socket(s)', '?')} socket × {lscpu.get('Core(s) per socket', '?')} cores × " \
           f"{lscpu.get('Thread(s) per core', '?')} thread(s) per core"
    hv = f" ({lscpu['Hypervisor vendor']} guest)" if lscpu.get("Hypervisor vendor") else ""
    rows = [("CPU", f"{lscpu.get('Model name', '?')}{hv}: {cpus} logical CPUs ({topo})"),
            ("caches", ", ".join(f"{k} {lscpu[k]}" for k in ("L1d cache", "L2 cache", "L3 cache") if k in lscpu)),
            ("vector flags", " ".join(f for f in wanted if f in flags) or "—"),
            ("memory", mem), ("OS", f"{osname}, Linux {os.uname().release}"),
            ("compiler", f"{cxx}; benchmarks -O3 -march=native, examples -O2 -march=native, Release")]
    peers = []
    for label, p in (("OpenBLAS", "libopenblas0"), ("oneDNN", "libdnnl2"), ("Eigen", "libeigen3-dev"),
                     ("Google Benchmark", "libbenchmark-dev")):
        v = pkg(p)
        if v:
            peers.append(f"{label} {v}")
    tv = db.text("have_torch")
    if tv:
        peers.append(f"PyTorch {tv} (Debian's python3-torch, /usr/bin/python3)")
    rows.append(("kernel paths", kernel_paths(db, build_dir, flags)))
    rows.append(("peers", ", ".join(peers)))
    if peak:
        rows.append(("measured FMA peak (bench_peak)", ", ".join(f"{v / 1e9:.0f} GFLOP/s on {t} thread{'s' if t > 1 else ''}"
                                                          for t, v in sorted(peak.items()))))
    tri = db.get("BM_triad", n=16777216, threads=2)
    if tri:
        rows.append(("triad bandwidth (bench_elementwise)", f"{tri.rate('bytes_per_second') / 1e9:.1f} GB/s at 16M floats, 2 threads"))
    gpu = db.text("gpu.txt")
    rows.append(("GPU", gpu if gpu else "none (nvidia-smi lists no GPU)"))
    return table(["", ""], rows)


# ---- the document -----------------------------------------------------------------------------------------------------
def build_block(db, build_dir, imgdir, img_rel):
    mode = db.text("mode") or "full"
    torch_name = f"PyTorch {db.text('have_torch')}" if db.text("have_torch") else "PyTorch"
    peak = {}
    for e in db.family("BM_fma_peak"):
        peak[int(e.args.get("threads", "1"))] = e.rate("FLOP/s")
    pl = Plotter(os.path.join(db.results, "plots"), imgdir)
    imgs = {"gemm": plot_gemm(db, pl, peak), "elementwise": plot_elementwise(db, pl), "inference": plot_inference(db, pl),
            "epochs": plot_epochs(db, pl, torch_name), "gemm_s8": plot_int8(db, pl), "gpu": plot_gpu(db, pl)}

    def img(key, alt):
        return f"![{alt}]({img_rel}/{imgs[key]})\n\n" if imgs.get(key) else ""

    secs = int(db.text("seconds") or 0)
    commit = sh("git", "-C", REPO, "rev-parse", "--short", "HEAD")
    # (the plots this run has just written, and the page itself, do not count as changes to what was measured)
    dirty = " plus uncommitted changes" if sh("git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                              ":(exclude)docs/img", ":(exclude)docs/performance.md") else ""
    fields = run_cpuinfo(db.results)
    kind = cpu_kind(fields)
    ident = ", ".join(x for x in (fields.get("model name"), f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} "
                                  f"model {fields.get('model', '?')}" if "cpu family" in fields else "",
                                  vector_isa(set(fields.get("flags", "").split()))) if x)
    L = [begin_marker(kind), "<!-- Generated by bench/compare (bench/compare.d/report.py) for this CPU kind: edit those, not "
         "this block. A run on another CPU kind writes its own block. -->", "", f"## Measured by bench/compare on {kind}", ""]
    if mode == "quick":
        L += ["**Quick mode (`--quick`): few sizes, one short repetition, 3200-image epochs. This checks the pipeline; "
              "these are not figures to cite. The full run is `bench/compare`.**", ""]
    L += [f"CPU kind: **{kind}** ({ident}). Measured by `{db.text('command')}` on {db.text('date')}, in {secs // 60} min "
          f"{secs % 60} s, at commit {commit}{dirty}. Every figure below comes from that run: read its ratios only against "
          "figures of this block, not against another CPU kind's block (other cores, vector units and kernel paths); "
          "absolute figures drift between runs.", "",
          "How: C++ benchmarks are Google Benchmark medians of "
          + ("3 repetitions of at least 0.2 s each" if mode == "full" else "one repetition of at least 0.02 s")
          + " (real time); the PyTorch peers (bench/torch_peers.py) are medians of single calls after one warm-up "
          + ("(at least 0.5 s and 3 calls)" if mode == "full" else "(at least 0.05 s and 3 calls)")
          + ", in the same run; each training epoch is run once, tessera's and PyTorch's back to back.", "",
          "### Machine", "", machine(db, build_dir, peak), "",
          "### Ratios", "",
          "tessera's speed over the peer's for the same work (the peer's time over tessera's; above 1: tessera is faster). "
          "For the bytes/s row, tessera's bytes/s over the triad loop's.", ""]
    rows = summary_rows(db, torch_name)
    L += [table(["workload", "configuration", "tessera", "peer", "peer's figure", "tessera / peer"], rows) if rows
          else "(no pair of figures was measured)", ""]
    t = gemm_table(db, peak)
    if t or imgs.get("gemm"):
        L += ["### GEMM", "", "`bench_gemm` (tessera's `matmul`, OpenBLAS's `cblas_sgemm`, Eigen's `noalias() = a * b`), "
              "`bench_gemm_onednn` (oneDNN's `dnnl_sgemm`), row-major float, against the FMA peak that `bench_peak` "
              "measures (independent FMA chains on every thread).", "", img("gemm", "SGEMM GFLOP/s against n"), t, ""]
    t = elementwise_table(db)
    if t or imgs.get("elementwise"):
        L += ["### Elementwise", "", "`bench_elementwise`: the chain `tanh(x*y + 0.5*z) * sigmoid(x - z)` fused into one "
              "pass, the same chain with every intermediate materialised (eager, tessera's own kernels), in Eigen Tensor "
              "(ThreadPoolDevice) and in PyTorch eager; the arithmetic chain `1.5*x + 2.5*y + 3.5*z`; the triad loop "
              "`c = a + 1.5*b` as the bandwidth reference. Bytes/s count each array read once and the result written "
              "once (4 arrays for the chains, 3 for the triad).", "", img("elementwise", "elementwise GB/s against n"),
              "Times (the arith and triad columns in GB/s):", "", t, ""]
    t = inference_table(db)
    if t:
        L += ["### SimpleCNN inference against batch size", "", "`bench_simplecnn` (`net.predict` on random images) "
              "and the same model in PyTorch (`eval()`, `no_grad`).", "", img("inference", "inference images/s against batch"), t, ""]
    t = epochs_table(db, torch_name)
    if t:
        L += ["### Training epochs", "", f"`examples/fashion_mnist` against `bench/torch_simplecnn.py` and "
              f"`examples/fashion_mnist_lstm` against `bench/torch_row_lstm.py`: one epoch each ({epoch_images(db)}, "
              "batch 64, 2 threads), the same models, optimizers and data, back to back.", "", img("epochs", "epoch times"), t, ""]
    ran = set(db.text("workloads").split())
    t = int8_table(db)
    if "gemm_s8" in ran:
        L += ["### int8 GEMM", ""]
    if "gemm_s8" not in ran:
        pass
    elif t:
        L += ["`bench_gemm_s8` against oneDNN's `dnnl_gemm_u8s8s32` in the same binary.", "", img("gemm_s8", "int8 GEMM"), t, ""]
    else:
        L += ["No pair of tessera and oneDNN figures in bench_gemm_s8's output." if any(e.source == "gemm_s8" for e in db.entries)
              else "Not measured in this run: `bench_gemm_s8` (tessera's int8 GEMM beside oneDNN's u8s8s32) was not built.", ""]
    t = threads_table(db)
    if t:
        L += ["### Threads: 2 against 1", "", t, ""]
    t = contended_table(db)
    if t:
        quiet, busy = db.get("BM_epoch_simplecnn_contended_quiet", threads=2), db.get("BM_epoch_simplecnn_contended_busy", threads=2)
        verdict = ""
        if quiet and busy:
            r = quiet.time_s / busy.time_s
            verdict = (f" With the library's defaults this run kept {r:.2f}× of the quiet speed: "
                       + ("the goal is met" if r >= CONTENDED_GOAL else "below the goal")
                       + (" (in quick mode's epochs of a second or two: a noisy sample)." if mode == "quick" else "."))
        cpu = db.text("contended_cpu")
        L += ["### Under contention", "", "The SimpleCNN training epoch (`examples/fashion_mnist`, 2 threads, "
              f"{epoch_images(db)}) on the quiet machine, then beside a busy loop (`while :; do :; done`) pinned to "
              f"CPU {cpu or '?'}, the last this run may use, with the library's defaults, with the adaptive team off, and "
              f"with it off and OpenMP's passive wait policy. Goal: beside the loop with the defaults, at least "
              f"{CONTENDED_GOAL}× the quiet speed; ideal {CONTENDED_IDEAL}× (one of the two cores left).{verdict}", "",
              t, ""]
    gpu = db.text("gpu.txt")
    if "gpu" in ran:
        L += ["### GPU", ""]
    if "gpu" not in ran:
        pass
    elif not gpu:
        L += ["No GPU on this machine (nvidia-smi lists none): nothing measured. Where one is, bench/compare builds "
              "with CUDA and runs `bench_cuda_gemm` (tessera's cuBLASLt GEMM against cuBLAS, the Linear epilogue), "
              "`bench_cuda_gemm_s8` (int8 against cuBLASLt), `bench_cuda_lstm`, the `fashion_mnist_cuda` epoch, and PyTorch's "
              "CUDA GEMM, LSTM (cuDNN) and epoch when its PyTorch sees the GPU.", ""]
    else:
        L += [f"Device: {gpu}.", "", img("gpu", "GPU SGEMM")]
        rows = []
        for e in sorted(db.family("BM_sgemm_tessera"), key=lambda e: int(e.pos[0]) if e.pos else 0):
            c = next((x for x in db.family("BM_sgemm_cublas") if x.pos == e.pos), None)
            p = next((x for x in db.family("BM_torch_cuda_sgemm") if x.pos == e.pos), None)
            rows.append((e.pos[0] if e.pos else "?", fmt_rate(e.rate("TFLOP/s"), "TFLOP/s"),
                         fmt_rate(c.rate("TFLOP/s"), "TFLOP/s") if c else "—", ratio(c.time_s / e.time_s) if c else "—",
                         fmt_rate(p.rate("TFLOP/s"), "TFLOP/s") if p else "—", ratio(p.time_s / e.time_s) if p else "—"))
        if rows:
            header = ["n", "tessera", "cuBLAS", "tessera / cuBLAS", "PyTorch", "tessera / PyTorch"]
            if not db.family("BM_torch_cuda_sgemm"):
                header, rows = header[:4], [r[:4] for r in rows]
            L += ["SGEMM, FP32 (`bench_cuda_gemm`: cuBLASLt through `cuda_gemm` against `cublasSgemm`):", "",
                  table(header, rows), ""]
        rows = []
        for e in db.family("BM_linear_bias_relu_fused", "cuda_gemm"):
            s = next((x for x in db.family("BM_linear_bias_relu_separate") if x.pos == e.pos), None)
            rows.append(("×".join(e.pos), fmt_time(e.time_s), fmt_time(s.time_s) if s else "—",
                         ratio(s.time_s / e.time_s) if s else "—"))
        if rows:
            L += ["Linear + bias + ReLU (M×N×K): cuBLASLt epilogue against the GEMM then a separate kernel.", "",
                  table(["M×N×K", "fused", "separate", "fused speed-up"], rows), ""]
        rows = []
        for e in sorted(db.family("BM_tessera_cuda_gemm_s8"), key=lambda e: (int(e.args.get("n", 0)), e.args.get("requant", ""))):
            c = db.get("BM_cublaslt_gemm_s8", n=e.args.get("n"))
            rows.append((e.args.get("n", "?"), "requantized to uint8 in the kernel" if e.args.get("requant") == "1" else "int32 sums",
                         fmt_rate(e.rate("OP/s"), "OP/s"), fmt_rate(c.rate("OP/s"), "OP/s") if c else "—",
                         ratio(c.time_s / e.time_s) if c else "—"))
        if rows:
            L += ["int8 GEMM (`bench_cuda_gemm_s8`: tessera's dp4a kernel with its epilogue against cuBLASLt's int8 GEMM, "
                  "int32 sums, called directly):", "", table(["n", "tessera output", "tessera", "cuBLASLt", "tessera / cuBLASLt"], rows), ""]
        rows = []
        for what, ours, theirs in (("forward", "BM_cuda_lstm_forward", "BM_torch_cuda_lstm_forward"),
                                   ("forward + backward", "BM_cuda_lstm_forward_backward", "BM_torch_cuda_lstm_forward_backward")):
            e, p = db.get(ours), db.get(theirs)
            if e:
                rows.append((what, fmt_time(e.time_s), fmt_time(p.time_s) if p else "—", ratio(p.time_s / e.time_s) if p else "—"))
        if rows:
            L += ["LSTM, 2 layers, T = 100, B = 64, I = 128, H = 256 (`bench_cuda_lstm`: cuBLASLt and one fused kernel per "
                  "step, against PyTorch's `nn.LSTM` through cuDNN):", "",
                  table(["pass", "tessera", "PyTorch (cuDNN)", "tessera speed-up"], rows), ""]
        o, p = db.get("BM_epoch_simplecnn_tessera_cuda"), db.get("BM_epoch_simplecnn_torch_cuda")
        if not any(db.family(f) for f in ("BM_sgemm_tessera", "BM_tessera_cuda_gemm_s8", "BM_cuda_lstm_forward")) and not o:
            L += ["The GPU benchmarks gave no figures in this run: see the logs of the gpu steps.", ""]
        if o:
            L += [f"SimpleCNN training epoch on the GPU (`fashion_mnist_cuda`): {o.time_s:.1f} s"
                  + (f"; PyTorch on the GPU {p.time_s:.1f} s ({ratio(p.time_s / o.time_s)})" if p else
                     "; no PyTorch with CUDA on this machine") + ".", ""]
    steps = [l.split("\t") for l in db.text("steps.tsv").splitlines() if l]
    if steps:
        L += ["### Run time", "", "Seconds per step of this run (a failed step is marked):", "",
              table(["step", "s"], [(s[0], s[1] + (f" (failed, exit {s[2]})" if len(s) > 2 and s[2] != "0" else ""))
                                    for s in steps]), ""]
    notes = db.text("notes")
    if notes:
        L += ["### Left out", ""] + [f"* {n}" for n in notes.splitlines()] + [""]
    L.append(end_marker(kind))
    return "\n".join(L) + "\n", pl.made


def blocks(text):
    """[(kind or None, start, end)] of the generated blocks of a document, in order (end: just past the end marker)."""
    out, pos = [], 0
    while (m := BEGIN_RE.search(text, pos)) is not None:
        end = re.compile(r"^" + re.escape(end_marker(m.group(1))) + r"[ \t]*$", re.M).search(text, m.end())
        if end is None:
            raise SystemExit(f"report: '{m.group(0)}' has no '{end_marker(m.group(1))}' line: fix the document by hand")
        pos = end.end()
        out.append((m.group(1), m.start(), pos))
    return out


def splice(doc_path, block, kind):
    """Puts `block` in place of the document's block of the same CPU kind, else after its last generated block (else at
    its end); the other kinds' blocks stay as they are. Returns the text of the block it replaced ("" if none)."""
    text = open(doc_path).read() if os.path.exists(doc_path) else "# Performance\n\n"
    bs = blocks(text)
    same = [b for b in bs if b[0] == kind]
    old = ""
    if same:
        _, start, end = same[0]
        old = text[start:end]
        text = text[:start] + block.rstrip("\n") + text[end:]
    elif bs:
        end = bs[-1][2]
        text = text[:end] + "\n\n" + block.rstrip("\n") + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(doc_path, "w") as f:
        f.write(text)
    return old


def drop_unlinked_images(doc_path, old_block, imgroot):
    """The plots the replaced block showed that no block of the document shows any more (under imgroot only)."""
    docdir, text = os.path.dirname(os.path.abspath(doc_path)), open(doc_path).read()
    root = os.path.abspath(imgroot)
    for link in set(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", old_block)):
        path = os.path.abspath(os.path.join(docdir, link))
        if path.startswith(root + os.sep) and f"]({link})" not in text and os.path.exists(path):
            os.remove(path)


# ---- helpers for bench/compare ----------------------------------------------------------------------------------------
def arg_values(path, key):
    es, _ = load_gbench(path)
    vals = sorted({int(e.args[key]) for e in es if key in e.args})
    print(",".join(str(v) for v in vals))


def subset_idx(src, dst, ntrain, ntest):
    os.makedirs(dst, exist_ok=True)
    for split, n in (("train", ntrain), ("t10k", ntest)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            with gzip.open(os.path.join(src, f"{split}-{kind}.gz")) as f:
                magic = f.read(4)
                nd = magic[3]
                dims = list(struct.unpack(">" + "I" * nd, f.read(4 * nd)))
                row = 1
                for d in dims[1:]:
                    row *= d
                body = f.read(row * n)
            dims[0] = n
            with gzip.open(os.path.join(dst, f"{split}-{kind}.gz"), "wb", compresslevel=1) as g:
                g.write(magic + struct.pack(">" + "I" * nd, *dims) + body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arg-values", nargs=2)
    ap.add_argument("--cpu-kind", nargs="?", const="/proc/cpuinfo", metavar="CPUINFO")
    ap.add_argument("--subset-idx", nargs=4)
    ap.add_argument("--results")
    ap.add_argument("--build-dir", default="build-bench")
    ap.add_argument("--doc")
    ap.add_argument("--img")
    a = ap.parse_args()
    if a.arg_values:
        return arg_values(*a.arg_values)
    if a.cpu_kind:
        return print(cpu_kind(cpuinfo_fields(open(a.cpu_kind).read())))
    if a.subset_idx:
        return subset_idx(a.subset_idx[0], a.subset_idx[1], int(a.subset_idx[2]), int(a.subset_idx[3]))
    db = DB(a.results)
    kind = cpu_kind(run_cpuinfo(a.results))
    imgroot = a.img or os.path.join(a.results, "img")
    # in the document each CPU kind has its plots in a folder of its own (docs/img/amd-zen-3/...)
    imgdir = os.path.join(imgroot, kind_slug(kind)) if a.doc else imgroot
    img_rel = os.path.relpath(imgdir, os.path.dirname(os.path.abspath(a.doc))) if a.doc else imgdir
    if a.doc:
        # plots of an earlier run of this kind that this run did not draw would be stale: remove them
        for old in os.listdir(imgdir) if os.path.isdir(imgdir) else []:
            if old.endswith(".png"):
                os.remove(os.path.join(imgdir, old))
    block, made = build_block(db, a.build_dir, imgdir, img_rel)
    if a.doc:
        drop_unlinked_images(a.doc, splice(a.doc, block, kind), imgroot)
    else:
        sys.stdout.write(block)


if __name__ == "__main__":
    main()
