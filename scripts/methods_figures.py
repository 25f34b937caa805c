"""Run the default curriculum and precision comparisons on the built-in corpus, one thread, and
print their findings and timings: ``python -m scripts.methods_figures``."""
import time

import torch

from explorer import methods
from explorer.corpus import builtin


def main() -> None:
    torch.set_num_threads(1)
    corpus = builtin()
    for settings in (methods.CurriculumSettings(), methods.PrecisionSettings()):
        job = methods.job(settings.for_corpus(corpus), corpus)
        t0 = time.perf_counter()
        while not job.step(1.0):
            pass
        run = job.result()
        print(f"== {job.kind}: {time.perf_counter() - t0:.1f} s wall in all")
        for arm, recs in run.records.items():
            print(f"  {arm}: " + ", ".join(f"({r.seconds:.1f} s, step {r.step}, {r.loss:.3f})" for r in recs))
        for line in run.findings():
            print("  -", line)


if __name__ == "__main__":
    main()
