"""Studies: what many samples say about temperature, run on any generator, resumable on disk.

- :mod:`tempscope.study.grid`: the temperature sweep (prompts x configs x temperatures x
  samples) and its run store (``manifest.json``, ``samples.jsonl``);
- :mod:`tempscope.study.results`: a run's records as per-sample, per-cell and summary tables;
- :mod:`tempscope.study.metrics`: the numbers (distinct-n, self-BLEU, Zipf, repetition,
  coherence, bootstrap intervals);
- :mod:`tempscope.study.corpus`: human reference text (Shakespeare) for the named studies;
- :mod:`tempscope.study.degeneration`: Holtzman et al.'s degeneration study;
- :mod:`tempscope.study.calibration`: the calibration sums, ECE and T* of one model on text;
- :mod:`tempscope.study.calibration_study`: the calibration study around it.

The sweep's names are re-exported here (``from tempscope.study import sweep``); the other
modules are imported on their own, so importing this package stays light (no torch).
"""

from tempscope.study.grid import (
    DEFAULT_TEMPERATURES,
    FORMAT,
    MANIFEST,
    RECORD_KEYS,
    SAMPLES,
    SETTINGS,
    TOP_ALTERNATIVES,
    CellKey,
    Record,
    SweepProgress,
    builtin_prompts,
    check_grid,
    open_run,
    read_manifest,
    read_prompts,
    read_records,
    sweep,
)

__all__ = [
    "DEFAULT_TEMPERATURES",
    "FORMAT",
    "MANIFEST",
    "RECORD_KEYS",
    "SAMPLES",
    "SETTINGS",
    "TOP_ALTERNATIVES",
    "CellKey",
    "Record",
    "SweepProgress",
    "builtin_prompts",
    "check_grid",
    "open_run",
    "read_manifest",
    "read_prompts",
    "read_records",
    "sweep",
]
