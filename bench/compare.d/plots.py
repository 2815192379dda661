# bench/compare.d/plots.py: the plots of a bench/compare block. Plotter writes each curve's points as a gnuplot
# data file (NAME.dat, in the results folder's plots/), the gnuplot script beside it (NAME.gp) and renders the PNG into
# the image folder (pngcairo where gnuplot has it, else png); without gnuplot it draws nothing and every plot_* returns
# None, so the document shows no image. plot_gemm, plot_elementwise, plot_inference, plot_epochs, plot_int8 and
# plot_gpu each return the PNG's file name, or None when the run has none of their figures. Standard library only.
import os, shutil, subprocess, sys

from tables import counter_key, epoch_images, fmt_n, series_of


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
