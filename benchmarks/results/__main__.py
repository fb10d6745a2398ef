"""`python -m benchmarks.results [SECTION ...] [--recipes NAME ...] [--render]`

Runs the named sections (all of them by default: zoo, recipes, ensemble, export, tuning,
confirm, dynamics), writes docs/results/SECTION.json for each, prints how long each took, then renders
every generated block of README.md and docs/*.md from the results files. With `--render` it only
renders. `--recipes` limits the `recipes` section to some recipes (the rest keep their rows).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SECTIONS = ("zoo", "recipes", "ensemble", "export", "tuning", "confirm", "dynamics")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.results", description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"sections to run: {', '.join(SECTIONS)}. Defaults to all")
    parser.add_argument("--recipes", nargs="+", metavar="NAME", help="recipes section: only these recipes")
    parser.add_argument("--render", action="store_true", help="only render the docs from the results files")
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")

    from benchmarks import results
    from benchmarks.results import render

    results.commit()  # record the commit the measurements start on
    if not args.render:
        import importlib

        started = time.perf_counter()
        for section in args.sections or SECTIONS:
            t0 = time.perf_counter()
            module = importlib.import_module(f"benchmarks.results.{section}")
            if section == "recipes":
                module.measure(args.recipes)
            else:
                module.measure()
            print(f"{section}: wrote docs/results/{section}.json in {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"all sections: {time.perf_counter() - started:.0f} s", flush=True)
    changed = render.render_all(write=True)
    print(f"rendered: {', '.join(changed) if changed else 'every generated block was current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
