# .npy files both ways between numpy and tessera (tests/interop/python_tests.cmake):
#   /usr/bin/python3 numpy_npy.py <interop_npy program>
# numpy.save writes every dtype tessera reads at ranks 0-4 and odd sizes; tessera reads each (its printed sum is
# checked) and writes it back with save_npy: the file must be byte for byte numpy's own. Version 2.0 files are read;
# Fortran order, big-endian and float16 are refused with messages that say so; tessera's own files (values from a
# formula repeated here, a strided view written in C order) are read by numpy.load.
# Exit code 0 on success, 1 on a failed check, 77 (skipped) when numpy is missing.
import subprocess, sys

try:
    import numpy as np
except ImportError:
    print("numpy_npy.py: skipped: numpy is not installed for", sys.executable, "(Debian: python3-numpy)")
    sys.exit(77)

PROG = sys.argv[1]
failures = []


def check(ok, what):
    if not ok:
        print("FAIL: " + what, flush=True)
        failures.append(what)


def echo(path):
    return subprocess.run([PROG, "echo", path, "out.npy"], capture_output=True, text=True)


rng = np.random.default_rng(7)
shapes = [(), (1,), (7,), (33, 3), (3, 65, 1), (2, 1, 127, 3), (0, 5)]
count = 0
for dtype in [np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.bool_]:
    for shape in shapes:
        if dtype == np.bool_:
            a = rng.integers(0, 2, shape).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            a = rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)
        else:
            a = (rng.standard_normal(shape) * 100).astype(dtype)
        np.save("in.npy", a)
        r = echo("in.npy")
        what = f"{np.dtype(dtype).str} {shape}"
        check(r.returncode == 0, what + ": tessera read it (" + r.stderr.strip() + ")")
        if r.returncode != 0:
            continue
        got_sum = float(r.stdout.split()[-1])
        want_sum = float(a.astype(np.float64).sum())
        check(abs(got_sum - want_sum) <= 1e-9 * max(1.0, abs(want_sum)), f"{what}: tessera's sum {got_sum} = {want_sum}")
        check(open("out.npy", "rb").read() == open("in.npy", "rb").read(), what + ": save_npy wrote numpy's bytes")
        b = np.load("out.npy")
        check(b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b), what + ": numpy reads it back")
        count += 1
print(f"{count} arrays went numpy -> tessera -> numpy byte for byte")

# a version 2.0 file
a = np.arange(12, dtype=np.float32).reshape(3, 4)
with open("v2.npy", "wb") as f:
    np.lib.format.write_array(f, a, version=(2, 0))
r = echo("v2.npy")
check(r.returncode == 0 and np.array_equal(np.load("out.npy"), a), "a version 2.0 file is read: " + r.stderr.strip())

# refused, with a message saying why
for name, arr, words in [("fortran", np.asfortranarray(np.ones((3, 4), np.float32)), "fortran_order is True"),
                         ("big_endian", np.ones(5, ">f4"), "descr '>f4' is not supported"),
                         ("float16", np.ones(5, np.float16), "descr '<f2' is not supported")]:
    np.save(name + ".npy", arr)
    r = echo(name + ".npy")
    check(r.returncode == 1 and words in r.stderr, f"{name}: refused with '{words}': got {r.stderr.strip()!r}")

# tessera writes, numpy reads
r = subprocess.run([PROG, "make", "."], capture_output=True, text=True)
check(r.returncode == 0, "interop_npy make: " + r.stderr.strip())
i = np.arange(3 * 5 * 7).reshape(3, 5, 7)
want = {"float32": (i * 0.5 - 3).astype(np.float32), "float64": i / 3.0, "int8": ((i * 37) % 256 - 128).astype(np.int8),
        "uint8": ((i * 7) % 256).astype(np.uint8), "int32": (i * 100003 - 5000000).astype(np.int32),
        "int64": i.astype(np.int64) * 3000000007 - 1, "bool": i % 3 == 0}
for name, w in want.items():
    got = np.load(name + ".npy")
    check(got.dtype == w.dtype and got.shape == w.shape and np.array_equal(got, w), f"tessera's {name}.npy read by numpy")
s = np.load("scalar.npy")
check(s.shape == () and s.dtype == np.float64 and s == -2.5, "tessera's rank-0 file")
v = np.load("vector.npy")
check(v.shape == (7,) and v.dtype == np.int64 and np.array_equal(v, np.arange(7) ** 2), "tessera's rank-1 file")
t = np.load("transposed.npy")
check(t.shape == (6, 4) and np.array_equal(t, np.arange(24, dtype=np.float32).reshape(4, 6).T), "a strided view, C order")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("all checks passed")
