# bench/compare.d/results.py: the result database of a bench/compare run. Loads the Google Benchmark JSON files of
# the results folder (the C++ benchmarks and bench/torch_peers.py: per benchmark the median aggregate when there are
# repetitions, else the single run; errored and skipped runs are left out) and records.tsv (the training epochs:
# benchmark-style name, seconds, key=value counters) into Entry objects, and answers report.py's questions about
# them (DB.get, DB.family, DB.values, DB.text for the run's small text files). A benchmark's name is parsed into its
# family (before the first '/') and its named arguments (n:1024/threads:2), which is how rows find their figures.
# Standard library only; used by report.py, tables.py, plots.py and machine.py through the DB they are given.
import json, os, sys

UNIT_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


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
