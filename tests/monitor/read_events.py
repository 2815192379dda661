#!/usr/bin/env python3
"""An independent reader of the TensorBoard event files that tessera::monitor::summary_writer writes.

    read_events.py <write_events_program> [logdir]

Runs the program (tests/monitor/write_events_program.cpp) to write a run, then reads the event file with
google.protobuf: the Event, Summary, HistogramProto, TensorProto ... classes are built at run time from
FileDescriptorProto definitions written below (field numbers from TensorFlow's event.proto, summary.proto,
tensor.proto, tensor_shape.proto; no protoc). Every TFRecord's length CRC and data CRC are checked (CRC32C written
here from its definition), then the file_version, every tag, step, value, histogram (TensorFlow's default buckets
counted here) and image (PNG chunks parsed, their CRCs checked, the rows inflated with zlib and unfiltered) against
the values the program was told to write. Exits 1 naming the first difference, 77 when google.protobuf is missing.
"""
import bisect
import math
import os
import re
import socket
import struct
import subprocess
import sys
import zlib

try:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
except ImportError as e:  # pragma: no cover
    print(f"read_events.py: skipped: google.protobuf is missing ({e}); Debian: apt-get install python3-protobuf")
    sys.exit(77)

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


# ---- protobuf classes from descriptors ---------------------------------------------------------------------------
F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
MESSAGES = {
    # TensorFlow's event.proto
    "Event": [("wall_time", 1, F.TYPE_DOUBLE), ("step", 2, F.TYPE_INT64), ("file_version", 3, F.TYPE_STRING),
              ("graph_def", 4, F.TYPE_BYTES), ("summary", 5, "Summary")],
    # summary.proto (Summary.Value and Summary.Image as top-level messages: the wire format is the same)
    "Summary": [("value", 1, "Value", REP)],
    "Value": [("node_name", 7, F.TYPE_STRING), ("tag", 1, F.TYPE_STRING), ("metadata", 9, "SummaryMetadata"),
              ("simple_value", 2, F.TYPE_FLOAT), ("obsolete_old_style_histogram", 3, F.TYPE_BYTES),
              ("image", 4, "Image"), ("audio", 5, F.TYPE_BYTES), ("histo", 6, "HistogramProto"),
              ("tensor", 8, "TensorProto")],
    "Image": [("height", 1, F.TYPE_INT32), ("width", 2, F.TYPE_INT32), ("colorspace", 3, F.TYPE_INT32),
              ("encoded_image_string", 4, F.TYPE_BYTES)],
    "HistogramProto": [("min", 1, F.TYPE_DOUBLE), ("max", 2, F.TYPE_DOUBLE), ("num", 3, F.TYPE_DOUBLE),
                       ("sum", 4, F.TYPE_DOUBLE), ("sum_squares", 5, F.TYPE_DOUBLE),
                       ("bucket_limit", 6, F.TYPE_DOUBLE, REP), ("bucket", 7, F.TYPE_DOUBLE, REP)],
    "SummaryMetadata": [("plugin_data", 1, "PluginData"), ("display_name", 2, F.TYPE_STRING),
                        ("summary_description", 3, F.TYPE_STRING), ("data_class", 4, F.TYPE_INT32)],
    "PluginData": [("plugin_name", 1, F.TYPE_STRING), ("content", 2, F.TYPE_BYTES)],
    # tensor.proto, tensor_shape.proto (DataType as int32: DT_STRING = 7)
    "TensorProto": [("dtype", 1, F.TYPE_INT32), ("tensor_shape", 2, "TensorShapeProto"),
                    ("version_number", 3, F.TYPE_INT32), ("tensor_content", 4, F.TYPE_BYTES),
                    ("float_val", 5, F.TYPE_FLOAT, REP), ("double_val", 6, F.TYPE_DOUBLE, REP),
                    ("int_val", 7, F.TYPE_INT32, REP), ("string_val", 8, F.TYPE_BYTES, REP)],
    "TensorShapeProto": [("dim", 2, "Dim", REP), ("unknown_rank", 3, F.TYPE_BOOL)],
    "Dim": [("size", 1, F.TYPE_INT64), ("name", 2, F.TYPE_STRING)],
}


def build_classes():
    fdp = descriptor_pb2.FileDescriptorProto(name="tessera_tb_events.proto", package="tb", syntax="proto3")
    for name, fields in MESSAGES.items():
        m = fdp.message_type.add(name=name)
        for f in fields:
            fname, number, ftype = f[0], f[1], f[2]
            label = f[3] if len(f) > 3 else OPT
            fd = m.field.add(name=fname, number=number, label=label)
            if isinstance(ftype, str):
                fd.type = F.TYPE_MESSAGE
                fd.type_name = ".tb." + ftype
            else:
                fd.type = ftype
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    factory = message_factory.MessageFactory(pool)
    get = getattr(message_factory, "GetMessageClass", None)
    return {n: (get(pool.FindMessageTypeByName("tb." + n)) if get else
                factory.GetPrototype(pool.FindMessageTypeByName("tb." + n))) for n in MESSAGES}


def unknown_field_count(msg):
    """Fields the descriptors above do not name, anywhere in the message (a wrong field number shows up here)."""
    try:
        from google.protobuf import unknown_fields
        n = len(unknown_fields.UnknownFieldSet(msg))
    except (ImportError, AttributeError):
        n = len(msg.UnknownFields())
    for fd, value in msg.ListFields():
        if fd.type == fd.TYPE_MESSAGE:
            for sub in (value if fd.label == fd.LABEL_REPEATED else [value]):
                n += unknown_field_count(sub)
    return n


# ---- CRC32C and TFRecords ------------------------------------------------------------------------------------------
def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return c ^ 0xFFFFFFFF


def masked(c):
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    blob = open(path, "rb").read()
    at, out = 0, []
    while at < len(blob):
        if at + 12 > len(blob):
            check(False, f"{path}: a truncated record header at byte {at}")
            break
        (n,) = struct.unpack_from("<Q", blob, at)
        (len_crc,) = struct.unpack_from("<I", blob, at + 8)
        check(len_crc == masked(crc32c(blob[at:at + 8])), f"record at byte {at}: the length CRC")
        data = blob[at + 12:at + 12 + n]
        if at + 12 + n + 4 > len(blob):
            check(False, f"{path}: a truncated record at byte {at}")
            break
        (data_crc,) = struct.unpack_from("<I", blob, at + 12 + n)
        check(data_crc == masked(crc32c(data)), f"record at byte {at}: the data CRC")
        out.append(data)
        at += 12 + n + 4
    return out


# ---- PNG -------------------------------------------------------------------------------------------------------------
def decode_png(png):
    """(height, width, channels, rows of bytes) of an 8-bit non-interlaced PNG; checks every chunk's CRC."""
    check(png[:8] == b"\x89PNG\r\n\x1a\n", "the PNG signature")
    at, idat, ihdr, kinds = 8, b"", None, []
    while at < len(png):
        (n,) = struct.unpack_from(">I", png, at)
        kind, data = png[at + 4:at + 8], png[at + 8:at + 8 + n]
        (crc,) = struct.unpack_from(">I", png, at + 8 + n)
        check(crc == zlib.crc32(kind + data) & 0xFFFFFFFF, f"the CRC of PNG chunk {kind!r}")
        kinds.append(kind)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        at += 12 + n
    check(kinds[0] == b"IHDR" and kinds[-1] == b"IEND", f"PNG chunk order {kinds}")
    w, h, depth, ctype, comp, filt, interlace = ihdr
    check(depth == 8 and comp == 0 and filt == 0 and interlace == 0, f"IHDR {ihdr}")
    ch = {0: 1, 4: 2, 2: 3, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = w * ch
    check(len(raw) == h * (stride + 1), "the inflated PNG's length")
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # the five PNG filters (tessera writes 0, None; any is decoded)
            a = line[i - ch] if i >= ch else 0
            b, c = prev[i], (prev[i - ch] if i >= ch else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return h, w, ch, rows


# ---- the expected content (tests/monitor/write_events_program.cpp) --------------------------------------------------
def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def default_limits():
    pos, v = [], 1.0e-12
    while v < 1.0e20:
        pos.append(v)
        v *= 1.1
    pos.append(sys.float_info.max)
    return [-x for x in reversed(pos)] + [0.0] + pos


def expected_histogram(values):
    limits = default_limits()
    counts = [0.0] * len(limits)
    for v in values:
        counts[bisect.bisect_right(limits, v)] += 1
    out_limits, out_counts, i = [], [], 0
    while i < len(limits):  # runs of empty buckets as one
        end, count = limits[i], counts[i]
        i += 1
        if count <= 0:
            while i < len(limits) and counts[i] <= 0:
                end = limits[i]
                i += 1
        out_limits.append(end)
        out_counts.append(count)
    return dict(min=min(values), max=max(values), num=float(len(values)), sum=math.fsum(values),
                sum_squares=math.fsum(v * v for v in values), bucket_limit=out_limits, bucket=out_counts)


def pixel(v):
    return 0 if not v > 0 else 255 if v >= 1 else int(math.floor(v * 255 + 0.5))


def expected_grid():
    vals = [float(i - 10) for i in range(36)]  # [4, 1, 3, 3]
    lo, hi = min(vals), max(vals)
    cols, pad, scale, th, tw = 2, 1, 2, 6, 6
    h, w = 2 * (th + pad) + pad, cols * (tw + pad) + pad
    img = [[0] * w for _ in range(h)]
    for t in range(4):
        y0, x0 = pad + (t // cols) * (th + pad), pad + (t % cols) * (tw + pad)
        for y in range(th):
            for x in range(tw):
                img[y0 + y][x0 + x] = pixel((vals[t * 9 + (y // scale) * 3 + x // scale] - lo) / (hi - lo))
    return h, w, 1, [bytes(r) for r in img]


def expected():
    e = {}
    for s in range(10):
        e[("train/loss", s)] = ("scalar", f32(1.0 / (s + 1)))
        e[("train/accuracy", s)] = ("scalar", f32(s / 16.0))
    e[("weights", 1)] = ("histo", expected_histogram([f32(3 * math.sin(i)) for i in range(13 * 7)]))
    e[("ints", 2)] = ("histo", expected_histogram([float(i) for i in range(-3, 6)]))
    e[("model/weights/w", 3)] = ("histo", expected_histogram([f32(i / 4 - 1) for i in range(11)]))
    e[("model/grads/w", 3)] = ("histo", expected_histogram([0.5] * 11))
    rgb = [bytes((y * 40 + x * 20 + c * 70) % 256 for x in range(7) for c in range(3)) for y in range(5)]
    e[("image/rgb", 4)] = ("image", (5, 7, 3, rgb))
    gray = [bytes(pixel(f32((y * 6 + x) / 23.0)) for x in range(6)) for y in range(4)]
    e[("image/gray", 5)] = ("image", (4, 6, 1, gray))
    e[("filters", 6)] = ("image", expected_grid())
    e[("notes", 7)] = ("text", b"hello *tessera*\nline 2")
    return e


def close(a, b):
    return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))


def main():
    if len(sys.argv) < 2:
        print("usage: read_events.py <write_events_program> [logdir]")
        return 2
    program = sys.argv[1]
    logdir = sys.argv[2] if len(sys.argv) > 2 else "run"
    if os.path.isdir(logdir):
        for f in os.listdir(logdir):
            os.remove(os.path.join(logdir, f))
    t0 = __import__("time").time()
    out = subprocess.run([program, logdir], capture_output=True, text=True)
    t1 = __import__("time").time()
    if out.returncode != 0:
        print(f"{program} failed ({out.returncode}): {out.stderr}")
        return 1
    files = os.listdir(logdir)
    check(len(files) == 1, f"one event file in {logdir}: {files}")
    name = files[0]
    m = re.fullmatch(r"events\.out\.tfevents\.(\d{10})\.(.+)", name)
    check(m is not None and m.group(2) == socket.gethostname(),
          f"the file name {name!r} is events.out.tfevents.<10 digits>.{socket.gethostname()}")
    if m:
        check(int(t0) - 1 <= int(m.group(1)) <= t1 + 1, f"the file name's time {m.group(1)} is the run's")

    C = build_classes()
    recs = records(os.path.join(logdir, name))
    events = []
    for i, r in enumerate(recs):
        ev = C["Event"]()
        ev.ParseFromString(r)
        check(unknown_field_count(ev) == 0, f"record {i}: fields the descriptors do not know")
        check(t0 - 1 <= ev.wall_time <= t1 + 1, f"record {i}: wall_time {ev.wall_time} within the run")
        events.append(ev)
    check(len(events) > 0 and events[0].file_version == "brain.Event:2", "the first event's file_version")

    want = expected()
    seen = set()
    for ev in events[1:]:
        check(len(ev.summary.value) == 1, f"step {ev.step}: one value per event")
        for v in ev.summary.value:
            key = (v.tag, ev.step)
            check(key in want, f"an unexpected summary {key}")
            check(key not in seen, f"summary {key} written twice")
            seen.add(key)
            if key not in want:
                continue
            kind, value = want[key]
            fields = {fd.name for fd, _ in v.ListFields()} - {"tag"}
            allowed = {"scalar": {"simple_value"}, "histo": {"histo"}, "image": {"image"},
                       "text": {"tensor", "metadata"}}[kind]
            check(fields <= allowed and (kind == "scalar" or fields == allowed),
                  f"{key}: the value holds {sorted(fields)}, not {sorted(allowed)}")
            if kind == "scalar":
                check(v.simple_value == value, f"{key}: simple_value {v.simple_value} != {value}")
            elif kind == "histo":
                h = v.histo
                for k in ("min", "max", "num", "sum", "sum_squares"):
                    check(close(getattr(h, k), value[k]), f"{key}: {k} {getattr(h, k)} != {value[k]}")
                check(list(h.bucket_limit) == value["bucket_limit"], f"{key}: bucket limits differ")
                check(list(h.bucket) == value["bucket"], f"{key}: bucket counts {list(h.bucket)} != {value['bucket']}")
                check(sum(h.bucket) == h.num, f"{key}: the buckets hold num values")
            elif kind == "image":
                hh, ww, cc, rows = value
                im = v.image
                check((im.height, im.width, im.colorspace) == (hh, ww, cc),
                      f"{key}: image {im.height}x{im.width}x{im.colorspace} != {hh}x{ww}x{cc}")
                ph, pw, pc, prow = decode_png(im.encoded_image_string)
                check((ph, pw, pc) == (hh, ww, cc), f"{key}: the PNG is {ph}x{pw}x{pc}")
                check(prow == rows, f"{key}: the PNG's pixels differ from the image written")
            elif kind == "text":
                t = v.tensor
                check(v.metadata.plugin_data.plugin_name == "text", f"{key}: plugin_name")
                check(t.dtype == 7, f"{key}: dtype {t.dtype} is DT_STRING (7)")
                check([d.size for d in t.tensor_shape.dim] == [1], f"{key}: shape [1]")
                check(list(t.string_val) == [value], f"{key}: text {list(t.string_val)}")
    check(seen == set(want), f"summaries missing: {sorted(set(want) - seen)}")

    if FAILURES:
        print(f"read_events.py: {len(FAILURES)} failure(s)")
        return 1
    print(f"read_events.py: {name}: {len(recs)} records, CRCs, file_version, {len(seen)} summaries "
          f"(scalars, histograms, PNG images, text) as written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
