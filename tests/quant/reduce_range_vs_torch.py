# tessera's reduced-range quantization against PyTorch 1.13's: for random ranges (and ranges at 0 on one side), the
# qparams of torch.ao.quantization.MinMaxObserver(reduce_range=True) (quint8: quant range [0, 127]; qint8: [-64, 63])
# must equal tessera's affine_qparams<uint8 / int8>(lo, hi, true) (tests/quant/reduce_range_ops.cpp, the first
# argument), and tessera's quantize of values past both ends of each range must equal
# torch.fake_quantize_per_tensor_affine's over the same quant range: (q - zero_point) * scale the same float32 value.
# Exit 77 (skipped) when torch is missing.
import random
import subprocess
import sys

try:
    import torch
    from torch.ao.quantization.observer import MinMaxObserver
except ImportError as e:
    print(f"SKIPPED: torch is not importable by {sys.executable}: {e} (Debian: apt-get install python3-torch)")
    sys.exit(77)


def f32(v):
    return float(torch.tensor(v, dtype=torch.float32))


def main():
    program = sys.argv[1]
    rng = random.Random(5)
    ranges = []
    for i in range(300):
        lo, hi = sorted((f32(rng.uniform(-4, 4)), f32(rng.uniform(-4, 4))))
        if i % 5 == 0:
            lo = 0.0
        if i % 7 == 0:
            hi = 0.0
        if hi - lo < 1e-3:
            hi = lo + 1.0
        ranges.append((lo, hi))
    ranges += [(0.0, 6.0), (-1.0, 1.0), (-0.3, 2.7), (-6.0, 0.0)]
    xs = [f32(rng.uniform(-9, 9)) for _ in range(400)] + [0.0]
    with open("ranges.txt", "w") as f:
        for lo, hi in ranges:
            f.write(f"{lo!r} {hi!r}\n")
        f.write("x " + " ".join(repr(v) for v in xs) + "\n")
    subprocess.run([program], check=True)
    lines = open("qparams.txt").read().split("\n")
    x = torch.tensor(xs, dtype=torch.float32)
    bad = 0
    for r, (lo, hi) in enumerate(ranges):
        us, uz, ss, sz = lines[3 * r].split()
        qu = [int(v) for v in lines[3 * r + 1].split()]
        qs = [int(v) for v in lines[3 * r + 2].split()]
        for dtype, scale, zp, q, qmin, qmax in ((torch.quint8, us, uz, qu, 0, 127), (torch.qint8, ss, sz, qs, -64, 63)):
            obs = MinMaxObserver(dtype=dtype, reduce_range=True)
            obs(torch.tensor([lo, hi], dtype=torch.float32))
            ts_, tz = obs.calculate_qparams()
            if (obs.quant_min, obs.quant_max) != (qmin, qmax):
                print(f"torch's reduce_range for {dtype} is [{obs.quant_min}, {obs.quant_max}], expected [{qmin}, {qmax}]")
                return 1
            if f32(float(scale)) != float(ts_) or int(zp) != int(tz):
                bad += 1
                if bad < 10:
                    print(f"[{lo}, {hi}] {dtype}: tessera scale {scale} zp {zp}, torch {float(ts_)!r} {int(tz)}")
                continue
            want = torch.fake_quantize_per_tensor_affine(x, float(ts_), int(tz), qmin, qmax)
            got = (torch.tensor(q, dtype=torch.float32) - float(int(zp))) * torch.tensor(f32(float(scale)), dtype=torch.float32)
            if not torch.equal(want, got) or min(q) < qmin or max(q) > qmax:
                bad += 1
                i = int((want != got).nonzero()[0]) if not torch.equal(want, got) else 0
                if bad < 10:
                    print(f"[{lo}, {hi}] {dtype}: x {xs[i]!r}: tessera q {q[i]} -> {float(got[i])!r}, torch {float(want[i])!r}")
    print(f"{len(ranges)} ranges x 2 types, {len(xs)} values each: {bad} differ from torch")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
