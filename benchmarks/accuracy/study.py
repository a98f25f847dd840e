"""What each ingredient of kannada_bn's recipe buys: train ``portacnn train --model kannada_bn`` (the README's
command) on several seeds, then again with one ingredient switched off at a time, and score every run on the
official 10k test set.

    python benchmarks/accuracy/study.py                 # every run below, one after another (~2.5 h on 2 cores)
    python benchmarks/accuracy/study.py --only recipe   # just the recipe's seeds

| run          | what changes from the recipe                                                                          |
| ------------ | ----------------------------------------------------------------------------------------------------- |
| recipe       | nothing: ``portacnn train --model kannada_bn --seed S`` for every ``--seeds`` S                       |
| no_augment   | ``--augment none``                                                                                    |
| no_batchnorm | ``--model kannada_nobn``: the same network without BatchNorm (biased convolutions instead)            |
| no_schedule  | ``--schedule constant``: AdamW at the recipe's peak rate 3e-3 throughout                              |
| no_smoothing | ``--label-smoothing 0``                                                                               |
| ensemble     | no training: every subset of the recipe's seeds, probabilities averaged as ``portacnn evaluate`` does |

Every run is a fresh ``portacnn train`` subprocess writing to ``--runs/<run>-s<seed>/``; a run whose folder
already holds a finished checkpoint is scored again but not retrained, so an interrupted study resumes where
it stopped. The test set is read only to score finished runs: nothing here is chosen on it (the recipe itself
was chosen on the 10 % validation split it holds out of the training set). Training time is the sum of the
run's epoch times from its ``history.json``; ``load`` is the 1-minute load average seen when it started and
ended (a time measured while anything else ran is not this machine's speed).

Results: ``benchmarks/accuracy/results.json`` and ``results.md`` (``--out`` or ``$PORTACNN_BENCH_RESULTS``
elsewhere). ``--smoke`` trains a few hundred images for one epoch to check the plumbing; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import portacnn as pc  # noqa: E402
from portacnn import data  # noqa: E402
from portacnn.ensemble import average_log_proba  # noqa: E402
from portacnn.training import predict_log_proba  # noqa: E402

# run name -> (network, the flags that switch one ingredient off, what the table says)
VARIANTS = {
    "recipe": ("kannada_bn", [], "the README's recipe"),
    "no_augment": ("kannada_bn", ["--augment", "none"], "no augmentation"),
    "no_batchnorm": ("kannada_nobn", [], "no BatchNorm"),
    "no_schedule": ("kannada_bn", ["--schedule", "constant"], "no schedule (constant 3e-3)"),
    "no_smoothing": ("kannada_bn", ["--label-smoothing", "0"], "no label smoothing"),
}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _finished(folder: Path) -> bool:
    hist = folder / "history.json"
    if not (folder / "model.safetensors").exists() or not hist.exists():
        return False
    return not json.loads(hist.read_text()).get("interrupted", False)


def train(name: str, seed: int, args) -> dict:
    """Run (or reuse) one ``portacnn train``; returns where it is and how it went."""
    network, flags, _ = VARIANTS[name]
    folder = Path(args.runs) / f"{name}-s{seed}"
    info = {"run": name, "seed": seed, "network": network, "flags": flags, "folder": str(folder)}
    cmd = [sys.executable, "-m", "portacnn", "train", "--model", network, "--seed", str(seed), "--out", str(folder),
           "--no-progress", "--no-plots", "--json", *flags, *args.train_flags]
    info["command"] = " ".join(["portacnn", *cmd[3:]])
    if _finished(folder):
        info["reused"] = True
    else:
        print(f"[{dt.datetime.now():%H:%M:%S}] training {name} seed {seed}: {info['command']}", flush=True)
        load0 = os.getloadavg()[0]
        t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{name} seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        info.update(reused=False, wall_seconds=time.perf_counter() - t0, load=[load0, os.getloadavg()[0]],
                    cpu_seconds=(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime))
        (folder / "study.json").write_text(json.dumps(info, indent=2))  # keeps the load seen for a reuse
    saved = folder / "study.json"
    if info["reused"] and saved.exists():
        old = json.loads(saved.read_text())
        info.update({k: old[k] for k in ("wall_seconds", "load", "cpu_seconds", "note") if k in old})
    hist = json.loads((folder / "history.json").read_text())
    info["train_seconds"] = float(sum(hist.get("epoch_times", [])))
    info["epoch_seconds"] = [round(float(t), 1) for t in hist.get("epoch_times", [])]
    info["epochs"] = len(hist.get("epoch_times", []))
    val = hist["history"].get("val_accuracy") or [None]
    info["val_accuracy"] = val[-1]
    return info


def score(logp, y) -> dict:
    """Test accuracy, loss and the errors per true class from log-probabilities (N, classes)."""
    pred = np.argmax(logp, axis=1)
    wrong = pred != y
    return {
        "accuracy": float(np.mean(~wrong)),
        "loss": float(-np.mean(logp[np.arange(len(y)), y])),
        "errors": int(np.sum(wrong)),
        "errors_per_class": [int(np.sum(wrong & (y == c))) for c in range(10)],
    }


def ensembles(logs: dict, y) -> tuple[list, list]:
    """Every ensemble of two or more of the recipe's seeds (all of them first, then by size), and for each size
    1..K the spread of accuracy over all its subsets: so a K-seed ensemble reads against what any other choice of
    seeds would have given. ``logs`` maps seed -> that model's test log-probabilities."""
    seeds = sorted(logs)
    groups = [list(g) for k in range(2, len(seeds)) for g in itertools.combinations(seeds, k)]
    groups = ([seeds] if len(seeds) > 1 else []) + groups
    scored = [{"seeds": g, "test": score(average_log_proba([logs[s] for s in g]), y)} for g in groups]
    singles = [{"seeds": [s], "test": score(logs[s], y)} for s in seeds]
    by_size = []
    for k in range(1, len(seeds) + 1):
        acc = [e["test"]["accuracy"] for e in singles + scored if len(e["seeds"]) == k]
        by_size.append({"members": k, "subsets": len(acc), "mean": float(np.mean(acc)), "min": min(acc),
                        "max": max(acc)})
    return scored, by_size


def _pct(a) -> str:
    return "" if a is None else f"{100 * a:.2f} %"


def _minutes(s) -> str:
    return "" if s is None else f"{s / 60:.1f}"


def markdown(res: dict) -> str:
    recipe = [r for r in res["runs"] if r["run"] == "recipe"]
    acc = [r["test"]["accuracy"] for r in recipe]
    lines = [
        "# kannada_bn: what each ingredient buys",
        "",
        f"{res['date']}, portacnn git {res['commit']}, {res['machine']}. Scored on {res['test_set']} "
        f"({res['n_test']} images). Generated by `python benchmarks/accuracy/study.py`"
        + (" --smoke: **these numbers mean nothing**" if res["smoke"] else "") + ".",
        "",
        "| run | seed | epochs | train min | epoch s (min-max) | load (start, end) | val acc | test acc | test loss "
        "| errors | errors per class 0-9 |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in res["runs"]:
        load = ", ".join(f"{v:.1f}" for v in r["load"]) if r.get("load") else ""
        spread = f"{min(r['epoch_seconds']):.0f}-{max(r['epoch_seconds']):.0f}" if r.get("epoch_seconds") else ""
        t = r["test"]
        lines.append(
            f"| {VARIANTS[r['run']][2]} | {r['seed']} | {r['epochs']} | {_minutes(r['train_seconds'])} | {spread} | "
            f"{load} | {_pct(r['val_accuracy'])} | **{_pct(t['accuracy'])}** | {t['loss']:.4f} | {t['errors']} | "
            f"{' '.join(map(str, t['errors_per_class']))} |")
    for e in res["ensembles"][:1]:
        t = e["test"]
        lines.append(f"| ensemble of the recipe's seeds {'+'.join(map(str, e['seeds']))} | | | | | | | "
                     f"**{_pct(t['accuracy'])}** | {t['loss']:.4f} | {t['errors']} | "
                     f"{' '.join(map(str, t['errors_per_class']))} |")
    notes = [f"{VARIANTS[r['run']][2]}, seed {r['seed']}: {r['note']}" for r in res["runs"] if r.get("note")]
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    if acc:
        lines += ["", f"The recipe over {len(acc)} seed(s): test accuracy mean {_pct(float(np.mean(acc)))}, "
                      f"min {_pct(min(acc))}, max {_pct(max(acc))}."]
    sizes = res.get("ensemble_sizes", [])
    if len(sizes) > 1:
        lines += ["", "Test accuracy of every ensemble of the recipe's seeds, by how many it averages (all subsets "
                      "of that size; one member is a single model):", "",
                  "| members | subsets | mean | min | max |", "| ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {z['members']} | {z['subsets']} | {_pct(z['mean'])} | {_pct(z['min'])} | {_pct(z['max'])} |"
                  for z in sizes]
    ablation = ("Each ingredient is switched off in a seed-0 run; compare it with the recipe's seed 0 and read the "
                "seeds' spread as the noise floor of a single run. "
                if any(r["run"] != "recipe" for r in res["runs"]) else "")
    lines += ["", ablation + "Training minutes are the sum of the epoch times (data loading and the final test pass "
              "excluded); the load column is the 1-minute load average when the run started and ended (2 cores: "
              "above ~2.2, something else was running and the time is inflated).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", default="runs/accuracy", help="where the runs' folders go (default runs/accuracy)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the recipe's seeds (default 0 1 2)")
    p.add_argument("--ablation-seed", type=int, default=0, help="the seed of the ablation runs (default 0)")
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="train only these runs")
    p.add_argument("--data", help="passed to portacnn train --data (default: the embedded Kannada-MNIST)")
    p.add_argument("--out", default=None, help="results file stem (default benchmarks/accuracy/results)")
    p.add_argument("--smoke", action="store_true", help="256 images, 1 epoch: checks the plumbing only")
    args = p.parse_args(argv)
    args.train_flags = ["--data", args.data] if args.data else []
    if args.smoke:
        args.train_flags += ["--limit", "256", "--epochs", "1", "--batch-size", "64"]
    out_dir = Path(os.environ["PORTACNN_BENCH_RESULTS"]) if os.environ.get("PORTACNN_BENCH_RESULTS") else HERE
    stem = out_dir / (args.out or "results")

    wanted = args.only or list(VARIANTS)
    plan = [("recipe", s) for s in args.seeds] if "recipe" in wanted else []
    plan += [(name, args.ablation_seed) for name in wanted if name != "recipe"]
    runs = [train(name, seed, args) for name, seed in plan]

    _, (x_test, y_test), _, _ = data.train_test(args.data, seed=0)
    y_test = np.asarray(y_test)
    logs = {}
    for r in runs:  # each model predicts the test set once; every ensemble below averages these
        model = pc.load(Path(r["folder"]) / "model.safetensors")
        logs[(r["run"], r["seed"])] = np.asarray(predict_log_proba(model, x_test), dtype=np.float64)
        r["test"] = score(logs[(r["run"], r["seed"])], y_test)
        print(f"{r['run']} seed {r['seed']}: test accuracy {_pct(r['test']['accuracy'])}", flush=True)
    scored, by_size = ensembles({s: v for (name, s), v in logs.items() if name == "recipe"}, y_test)

    res = {
        "benchmark": "accuracy_study",
        "date": f"{dt.date.today()}",
        "commit": _git_commit(),
        "machine": f"{os.cpu_count()} CPUs",
        "smoke": args.smoke,
        "test_set": f"the test split of {args.data}" if args.data else "the official Kannada-MNIST test set",
        "n_test": int(len(y_test)),
        "runs": runs,
        "ensembles": scored,
        "ensemble_sizes": by_size,
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
