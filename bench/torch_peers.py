# The PyTorch peers of tessera's benchmarks, on the same workloads, written as Google Benchmark JSON (one median per
# configuration, real time) so that bench/compare reads them like the C++ benchmarks. Debian's interpreter sees
# python3-torch:
#   /usr/bin/python3 bench/torch_peers.py [--min-time S] [--threads 1,2] [--out FILE] WORKLOAD...
# WORKLOAD: chain:N,N,...  (tanh(x*y + 0.5*z) * sigmoid(x - z) on N floats; bytes: 4 arrays of 4 bytes)
#           autodiff_chain:N,.. (tanh(a*b + c) * sigmoid(a - c) forward + backward on N floats, as bench_autodiff)
#           attention      (nn.MultiheadAttention B=32 T=128 E=256 8 heads: forward, forward + backward, as bench_attention)
#           conv           (conv2d + bias + ReLU on the SimpleCNN's two layers at batch 64, as bench_conv)
#           pool           (max_pool2d 2x2 on 64x32x28x28 and 64x64x14x14, as bench_pool)
#           linear         (relu(x W^T + b), 256 x 1024 -> 1024, as bench_gemm's BM_linear_bias_relu_fused)
#           lstm           (2 layers, T=100, B=64, I=128, H=256: forward, forward+backward; 2 threads, as bench_lstm)
#           train_step     (the SimpleCNN's SGD step at batch 64 on random images, as bench_simplecnn)
#           infer:B,B,...  (the SimpleCNN's inference at batch B, as bench_simplecnn; items/s counts images)
#           cuda_gemm:N,.. (square SGEMM on the GPU, synchronised; only when torch sees a CUDA device)
#           cuda_lstm      (bench_cuda_lstm's LSTM on the GPU: nn.LSTM through cuDNN; only when torch sees a CUDA device)
import argparse, json, os, statistics, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_simplecnn import SimpleCNN

def measure(f, min_time, min_reps=3, sync=lambda: None):
    """Median seconds per call of f after one warm-up call: at least min_reps calls and min_time seconds."""
    f(); sync()
    times = []
    while len(times) < min_reps or (sum(times) < min_time and len(times) < 100000):
        t = time.perf_counter(); f(); sync(); times.append(time.perf_counter() - t)
    return statistics.median(times), len(times)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default="-")
    ap.add_argument("workloads", nargs="+")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    out = []
    def add(name, secs, reps, **counters):
        out.append(dict(name=name, run_name=name, run_type="iteration", iterations=reps, real_time=secs * 1e3,
                        time_unit="ms", **counters))
        print(f"{name:60s} {secs * 1e3:12.4f} ms", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    for w in a.workloads:
        kind, _, arg = w.partition(":")
        values = [int(v) for v in arg.split(",")] if arg else []
        if kind == "chain":
            for n in values:
                x, y, z = torch.rand(n), torch.rand(n), torch.rand(n)
                for t in threads:
                    torch.set_num_threads(t)
                    s, r = measure(lambda: torch.tanh(x * y + 0.5 * z) * torch.sigmoid(x - z), a.min_time)
                    add(f"BM_torch_chain/n:{n}/threads:{t}", s, r, bytes_per_second=16.0 * n / s)
                del x, y, z
        elif kind == "autodiff_chain":
            for n in values:
                xs = [torch.rand(n, requires_grad=True) for _ in range(3)]
                seed = torch.rand(n)
                def fb():
                    a, b, c = xs
                    for v in xs: v.grad = None
                    (torch.tanh(a * b + c) * torch.sigmoid(a - c)).backward(seed)
                for t in threads:
                    torch.set_num_threads(t)
                    s, r = measure(fb, a.min_time)
                    add(f"BM_torch_autodiff_chain/n:{n}/threads:{t}", s, r, bytes_per_second=44.0 * n / s)
                del xs, seed
        elif kind == "attention":
            # nn.MultiheadAttention self-attention, batch 32, sequence 128, width 256, 8 heads (as bench_attention and
            # ../shared/peers/attention_torch.py): forward under no_grad, and forward + backward of the output's sum
            Bt, Tt, Et, Ht = 32, 128, 256, 8
            mha = nn.MultiheadAttention(Et, Ht, batch_first=True)
            xa = torch.randn(Bt, Tt, Et, requires_grad=True)
            def fwd():
                with torch.no_grad():
                    mha(xa, xa, xa, need_weights=False)
            def fwdbwd():
                mha.zero_grad(); xa.grad = None
                y, _ = mha(xa, xa, xa, need_weights=False)
                y.sum().backward()
            for t in threads:
                torch.set_num_threads(t)
                s, r = measure(fwd, a.min_time)
                add(f"BM_torch_mha_forward/threads:{t}", s, r)
                s, r = measure(fwdbwd, a.min_time)
                add(f"BM_torch_mha_forward_backward/threads:{t}", s, r)
        elif kind == "conv":
            for (c, k, hw) in [(1, 32, 28), (32, 64, 14)]:
                conv = nn.Conv2d(c, k, 3, 1, 1); x = torch.randn(64, c, hw, hw)
                flops = 2.0 * 64 * k * hw * hw * c * 9
                for t in threads:
                    torch.set_num_threads(t)
                    with torch.no_grad():
                        s, r = measure(lambda: torch.relu(conv(x)), a.min_time)
                    add(f"BM_torch_conv_bias_relu/n:64/c:{c}/k:{k}/hw:{hw}/threads:{t}", s, r, **{"FLOP/s": flops / s})
        elif kind == "pool":
            for (c, hw) in [(32, 28), (64, 14)]:
                x = torch.rand(64, c, hw, hw)
                for t in threads:
                    torch.set_num_threads(t)
                    s, r = measure(lambda: F.max_pool2d(x, 2), a.min_time)
                    add(f"BM_torch_max_pool2d/c:{c}/hw:{hw}/threads:{t}", s, r,
                        bytes_per_second=4.0 * (x.numel() + x.numel() // 4) / s)
        elif kind == "linear":
            lin = nn.Linear(1024, 1024); x = torch.randn(256, 1024)
            for t in threads:
                torch.set_num_threads(t)
                with torch.no_grad():
                    s, r = measure(lambda: torch.relu(lin(x)), a.min_time)
                add(f"BM_torch_linear_bias_relu/threads:{t}", s, r, **{"FLOP/s": 2.0 * 256 * 1024 * 1024 / s})
        elif kind == "lstm":
            torch.set_num_threads(2)
            lstm = nn.LSTM(128, 256, 2, batch_first=True); x = torch.randn(64, 100, 128)
            fwd_flops = 2.0 * 100 * 64 * 1024 * (128 + 256) + 2.0 * 100 * 64 * 1024 * (256 + 256)
            with torch.no_grad():
                s, r = measure(lambda: lstm(x), a.min_time)
            add("BM_torch_lstm_forward/threads:2", s, r, **{"FLOP/s": fwd_flops / s})
            def fb():
                lstm.zero_grad(); o, _ = lstm(x); o.sum().backward()
            s, r = measure(fb, a.min_time)
            add("BM_torch_lstm_forward_backward/threads:2", s, r, **{"FLOP/s": 3 * fwd_flops / s})
        elif kind == "train_step":
            m = SimpleCNN(); opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            x = torch.rand(64, 1, 28, 28); y = torch.randint(0, 10, (64,))
            def step():
                opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step()
            for t in threads:
                torch.set_num_threads(t)
                s, r = measure(step, a.min_time)
                add(f"BM_torch_simplecnn_train_step/threads:{t}", s, r, items_per_second=64 / s)
        elif kind == "infer":
            m = SimpleCNN().eval()
            for b in values:
                x = torch.rand(b, 1, 28, 28)
                for t in threads:
                    torch.set_num_threads(t)
                    with torch.no_grad():
                        s, r = measure(lambda: m(x), a.min_time)
                    add(f"BM_torch_simplecnn_inference/batch:{b}/threads:{t}", s, r, items_per_second=b / s)
        elif kind == "cuda_lstm":
            if not torch.cuda.is_available():
                print("torch_peers: no CUDA device for PyTorch, cuda_lstm skipped", file=sys.stderr)
                continue
            lstm = nn.LSTM(128, 256, 2, batch_first=True).cuda(); x = torch.randn(64, 100, 128, device="cuda")
            fwd_flops = 2.0 * 100 * 64 * 1024 * (128 + 256) + 2.0 * 100 * 64 * 1024 * (256 + 256)
            with torch.no_grad():
                s, r = measure(lambda: lstm(x), a.min_time, sync=torch.cuda.synchronize)
            add("BM_torch_cuda_lstm_forward", s, r, **{"FLOP/s": fwd_flops / s})
            def fbc():
                lstm.zero_grad(); o, _ = lstm(x); o.sum().backward()
            s, r = measure(fbc, a.min_time, sync=torch.cuda.synchronize)
            add("BM_torch_cuda_lstm_forward_backward", s, r, **{"FLOP/s": 3 * fwd_flops / s})
        elif kind == "cuda_gemm":
            if not torch.cuda.is_available():
                print("torch_peers: no CUDA device for PyTorch, cuda_gemm skipped", file=sys.stderr)
                continue
            for n in values:
                p = torch.rand(n, n, device="cuda"); q = torch.rand(n, n, device="cuda")
                s, r = measure(lambda: torch.mm(p, q), a.min_time, sync=torch.cuda.synchronize)
                add(f"BM_torch_cuda_sgemm/{n}", s, r, **{"TFLOP/s": 2.0 * n ** 3 / s / 1e12})
        else:
            sys.exit(f"torch_peers: unknown workload {w}")
    doc = {"context": {"library": "PyTorch", "version": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "min_time": a.min_time, "statistic": "median of single calls after one warm-up"},
           "benchmarks": out}
    f = sys.stdout if a.out == "-" else open(a.out, "w")
    json.dump(doc, f, indent=1)

if __name__ == "__main__":
    main()
