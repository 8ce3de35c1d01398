"""Architectures side by side on one budget (``lmlab compare SPEC``) and reports of run dirs
(``lmlab report``): spec.py (the strict spec), run.py (train, resume, score), report.py
(results.json, report.md, a self-contained report.html)."""
