"""`python -m benchmarks.streaming`: memory and speed of reading image folders, kzoo's streamed
pipeline against `keras.utils.image_dataset_from_directory`, on the same folders in the same run.

Generates JPEG folders of 1,000 and 4,000 photos at 224x224 in 4 class folders (random crops
and rescales of scikit-learn's two sample photos, with pixel jitter so every file differs)
under `benchmarks/out/`, then measures, each in a fresh process:

- one pass over the training split with `kzoo.data.load(folder, image_size=(224, 224))` and
  `splits.epochs(32, ...)`, with the default `cache="auto"` and with `cache="none"`;
- one pass over the training subset of `keras.utils.image_dataset_from_directory(folder,
  image_size=(224, 224), validation_split=0.3, subset="training")` (the share kzoo trains on);
- two epochs with `cache="memory"` on the larger folder (the cache filled, then read back),
  against an epoch that decodes the files;
- `kzoo finetune --data FOLDER --image-size 224 224` completing one short head stage of a
  MobileNetV3Small (random weights) on the 4,000-image folder.

Peak memory is the process's peak resident set (`ru_maxrss`), TensorFlow's import included.
The checks: kzoo's peak grows by at most 50 KB per extra image from 1,000 to 4,000 images, and
its wall time per image is no more than Keras's. The CPU time per image (all threads) is
reported beside it: on a machine shared with other jobs it varies less than the wall time.
Writes `benchmarks/results-streaming.json` and `benchmarks/results-streaming.md`; the docs show
them (`python -m benchmarks.results --render`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from benchmarks import harness

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
SIZE = 224
CLASSES = ("bloom", "coast", "petal", "temple")
GROWTH_LIMIT_KB = 50


def make_folder(n: int, root: str, seed: int = 0) -> str:
    """`n` JPEGs of 224x224 in 4 class folders: crops of scikit-learn's sample photos (the
    flower photo for two classes, the temple photo for the other two, at different scales),
    each rescaled and jittered. Reused when already complete."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    done = os.path.join(root, ".complete")
    if os.path.isfile(done):
        return root
    photos = load_sample_images().images  # china.jpg (temple), flower.jpg; 427x640x3 each
    rng = np.random.default_rng(seed)
    scales = {"bloom": (0.3, 0.55), "petal": (0.6, 0.95), "coast": (0.3, 0.55), "temple": (0.6, 0.95)}
    for c in CLASSES:
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(n):
        name = CLASSES[i % len(CLASSES)]
        photo = photos[1] if name in ("bloom", "petal") else photos[0]
        side = int(rng.uniform(*scales[name]) * min(photo.shape[:2]))
        top = rng.integers(0, photo.shape[0] - side + 1)
        left = rng.integers(0, photo.shape[1] - side + 1)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIZE, SIZE), Image.BILINEAR)
        pixels = np.asarray(crop, dtype="int16") + rng.integers(-12, 13, (SIZE, SIZE, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(
            os.path.join(root, name, f"{i:05d}.jpg"), quality=90)
    with open(done, "w") as f:
        f.write(str(n))
    return root


def _peak_mb(who=None) -> float:
    import resource

    return resource.getrusage(who if who is not None else resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _count(batches) -> int:
    """Images in one pass over `batches` of `(x, y)`."""
    return sum(int(y.shape[0]) for _, y in batches)


def child(reader: str, folder: str, cache: str, batch_size: int = 32) -> dict:
    """One pass over the training split in this process; returns images, seconds, peak MB."""
    import keras
    import tensorflow as tf  # noqa: F401 - both readers' imports happen before the clock starts

    import kzoo

    baseline = _peak_mb()
    began, cpu_began = time.perf_counter(), _cpu_seconds()
    if reader == "kzoo":
        splits = kzoo.data.load(folder, image_size=(SIZE, SIZE), cache=cache, batch_size=batch_size)
        images = _count(splits.epochs(batch_size, seed=0, epochs=1))
        mode = splits.cache
    else:
        ds = keras.utils.image_dataset_from_directory(folder, image_size=(SIZE, SIZE), batch_size=batch_size,
                                                      validation_split=0.3, subset="training", seed=0,
                                                      verbose=False)
        images = _count(ds)
        mode = "-"
    seconds, cpu_seconds = time.perf_counter() - began, _cpu_seconds() - cpu_began
    return {"reader": reader, "cache": mode, "images": images, "seconds": round(seconds, 3),
            "ms_per_image": round(1000 * seconds / max(images, 1), 4),
            "cpu_ms_per_image": round(1000 * cpu_seconds / max(images, 1), 4),
            "peak_mb": round(_peak_mb(), 1), "after_import_mb": round(baseline, 1)}


def cache_child(folder: str, batch_size: int = 32) -> dict:
    """What `cache="memory"` costs and saves: ms per image of an epoch that fills the memory
    cache, of one that reads it back, and of an epoch that decodes (`cache="none"`, its second
    epoch, so both readers run warm), with this process's peak memory."""
    import kzoo

    def epoch(splits, e):
        began = time.perf_counter()
        images = _count(splits.epochs(batch_size, seed=0, epochs=e + 1, initial_epoch=e))
        return round(1000 * (time.perf_counter() - began) / max(images, 1), 4)

    plain = kzoo.data.load(folder, image_size=(SIZE, SIZE), cache="none", batch_size=batch_size)
    decode = [epoch(plain, e) for e in range(2)][1]
    cached = kzoo.data.load(folder, image_size=(SIZE, SIZE), cache="memory", batch_size=batch_size)
    fill, read = epoch(cached, 0), epoch(cached, 1)
    return {"decode_ms_per_image": decode, "fill_ms_per_image": fill, "read_ms_per_image": read,
            "peak_mb": round(_peak_mb(), 1)}


def _run_child(reader, folder, cache):
    cmd = [sys.executable, "-m", "benchmarks.streaming", "--child", reader, "--folder", folder, "--cache", cache]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"{reader} on {folder} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def finetune_peak(folder: str, out_dir: str) -> dict:
    """Peak memory and wall time of `kzoo finetune` completing one head stage on `folder`."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "kzoo"), "finetune", "--backbone", "MobileNetV3Small",
           "--weights", "none", "--data", folder, "--image-size", str(SIZE), str(SIZE),
           "--stages", "head:1@1e-3", "--batch-size", "32", "--out", out_dir, "--overwrite", "--quiet"]
    wrapper = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(json.dumps({'rc': p.returncode, 'seconds': round(time.perf_counter() - t, 1), "
               "'peak_mb': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1), "
               "'stderr': p.stderr[-1500:]}))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env, check=False)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["command"] = " ".join(["kzoo", *(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in cmd[1:])])
    metrics = os.path.join(out_dir, "metrics.json")
    if result["rc"] == 0 and os.path.isfile(metrics):
        with open(metrics) as f:
            m = json.load(f)
        result["test_accuracy"] = m.get("test_accuracy")
    return result


def machine() -> dict:
    import keras
    import tensorflow as tf

    cpu = harness.cpu_name()
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        memory_gb = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "platform": platform.platform()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 4000], help="the two folder sizes")
    parser.add_argument("--repeats", type=int, default=4, help="passes per reader and size (best time kept)")
    parser.add_argument("--skip-finetune", action="store_true", help="do not run kzoo finetune")
    parser.add_argument("--out", default=HERE, help="folder for results-streaming.json and .md")
    parser.add_argument("--child", choices=("kzoo", "keras", "cache"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(cache_child(args.folder) if args.child == "cache" else child(args.child, args.folder, args.cache)))
        return 0

    started, load_before = time.perf_counter(), os.getloadavg()[0]
    harness.git_state()  # the commit the measurements start on
    folders = {n: make_folder(n, os.path.join(OUT, f"photos-{n}")) for n in args.sizes}
    readers = [("kzoo", "auto"), ("kzoo", "none"), ("keras", "-")]
    rows = []
    for n, folder in folders.items():
        for repeat in range(args.repeats):
            order = readers if repeat % 2 == 0 else readers[::-1]  # alternate, so neither always runs warm
            for reader, cache in order:
                row = {"folder_images": n, "repeat": repeat, "requested_cache": cache, **_run_child(reader, folder, cache)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = _summarise(rows, args.sizes)
    command = "python -m benchmarks.streaming" + (f" --repeats {args.repeats}" if args.repeats != 4 else "")
    result = {"benchmark": "streaming image folders", "command": command, "machine": machine(),
              "summary": summary, "runs": rows}
    big = max(args.sizes)
    result["memory_cache"] = {"folder_images": big, **_run_child("cache", folders[big], "memory")}
    print(json.dumps(result["memory_cache"]), flush=True)
    if not args.skip_finetune:
        result["finetune"] = finetune_peak(folders[big], os.path.join(OUT, "finetune-run"))
        result["finetune"]["folder_images"] = big
        print(json.dumps(result["finetune"]), flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    # Other jobs on the machine slow the timings: the 1-minute load average before and after.
    result.update(harness.provenance(load_before))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results-streaming.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "results-streaming.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))
    return 0 if all(s["meets_goal"] for s in summary["checks"]) else 1


def _summarise(rows, sizes):
    """Best time and largest peak per (size, reader, requested cache); the two checks."""
    small, big = sorted(sizes)
    table = {}
    for row in rows:
        key = (row["folder_images"], row["reader"], row["requested_cache"])
        t = table.setdefault(key, {"folder_images": key[0], "reader": key[1], "requested_cache": key[2],
                                   "cache": row["cache"], "images": row["images"], "ms_per_image": [],
                                   "cpu_ms_per_image": [], "peak_mb": []})
        t["ms_per_image"].append(row["ms_per_image"])
        t["cpu_ms_per_image"].append(row.get("cpu_ms_per_image"))
        t["peak_mb"].append(row["peak_mb"])
    for t in table.values():
        t["ms_per_image"] = min(t["ms_per_image"])
        t["cpu_ms_per_image"] = min((c for c in t["cpu_ms_per_image"] if c is not None), default=None)
        t["peak_mb"] = max(t["peak_mb"])
    checks = []
    for cache in ("auto", "none"):
        a, b = table[(small, "kzoo", cache)], table[(big, "kzoo", cache)]
        growth = (b["peak_mb"] - a["peak_mb"]) * 1024 / (big - small)
        checks.append({"check": f"kzoo (cache={cache}) peak memory growth per extra image", "cache": cache,
                       "value_kb": round(growth, 2), "limit_kb": GROWTH_LIMIT_KB,
                       "meets_goal": growth <= GROWTH_LIMIT_KB})
        for n in (small, big):
            k, keras_row = table[(n, "kzoo", cache)], table[(n, "keras", "-")]
            ratio = k["ms_per_image"] / keras_row["ms_per_image"]
            check = {"check": f"kzoo (cache={cache}) time per image / Keras's, {n:,} images", "cache": cache,
                     "folder_images": n, "ratio": round(ratio, 3), "meets_goal": ratio <= 1.0}
            if k["cpu_ms_per_image"] and keras_row["cpu_ms_per_image"]:
                check["cpu_ratio"] = round(k["cpu_ms_per_image"] / keras_row["cpu_ms_per_image"], 3)
            checks.append(check)
    return {"table": sorted(table.values(), key=lambda t: (t["folder_images"], t["reader"], t["requested_cache"])),
            "checks": checks}


def markdown(result, title: bool = True) -> str:
    """The results as Markdown: `benchmarks/results-streaming.md`, and without the title the
    generated block of docs/datasets.md."""
    m = result["machine"]
    load = result.get("load_average")
    load = f", load average {load[0]} before and {load[1]} after" if load else ""
    date = f" {harness.describe(result)}" + (f" on {result['date']}" if result.get("date") else "")
    lines = ["# Streaming image folders: kzoo vs keras.utils.image_dataset_from_directory", ""] if title else []
    lines += [
        f"Measured by `{result['command']}`{date} on {m['cpu']} ({m['cores']} cores, {m['memory_gb']} GB){load}, "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}. One pass over the training split "
        "(70% of the folder) at 224x224, batch 32, in a fresh process each; time from the "
        "call that opens the folder to the last batch (best of the repeats; the CPU time counts "
        "every thread), peak resident memory with TensorFlow's import (largest of the repeats).",
        "",
        "| images in folder | reader | cache (chosen) | training images | ms per image | CPU ms per image | peak memory (MB) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for t in result["summary"]["table"]:
        cpu = f"{t['cpu_ms_per_image']:.3f}" if t.get("cpu_ms_per_image") is not None else "-"
        lines.append(f"| {t['folder_images']:,} | {t['reader']} | {t['requested_cache']} ({t['cache']}) | "
                     f"{t['images']:,} | {t['ms_per_image']:.3f} | {cpu} | {t['peak_mb']:,.0f} |")
    lines += ["", "| check | value | goal met |", "|---|---|---|"]
    for c in result["summary"]["checks"]:
        if "value_kb" in c:
            value = f"{c['value_kb']} KB (limit {c['limit_kb']} KB)"
        else:
            value = f"{c['ratio']}x" + (f" (CPU time {c['cpu_ratio']}x)" if "cpu_ratio" in c else "")
        lines.append(f"| {c['check']} | {value} | {'yes' if c['meets_goal'] else 'NO'} |")
    mc = result.get("memory_cache")
    if mc:
        lines += ["", f"`cache=\"memory\"` on the {mc['folder_images']:,}-image folder (one process): the epoch that "
                      f"fills the cache took {mc['fill_ms_per_image']:.3f} ms per image, the next one, read from "
                      f"memory, {mc['read_ms_per_image']:.3f} ms; an epoch decoding the files (`cache=\"none\"`, "
                      f"second epoch) {mc['decode_ms_per_image']:.3f} ms; peak memory {mc['peak_mb']:,.0f} MB "
                      f"(the cached images are uint8, {SIZE * SIZE * 3 / 1000:.0f} KB each)."]
    ft = result.get("finetune")
    if ft:
        lines += ["", f"`{ft['command']}` ({ft['folder_images']:,} images): exit code {ft['rc']}, "
                      f"{ft['seconds']} s, peak memory {ft['peak_mb']:,.0f} MB"
                      + (f", test accuracy {ft['test_accuracy']}" if ft.get("test_accuracy") is not None else "") + "."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
