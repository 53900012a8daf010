"""Reports from stored results: tables (CSV/Markdown/LaTeX), figures, one HTML page and one PDF.

Works from tidy tables only (``reports.results.RunResults``); never imports torch, bench or estimators.
Entry point: :func:`reports.build.build_report`.
"""

from .build import FORMATS, build_report
from .results import ReportError, RunResults, validate

__all__ = ["build_report", "FORMATS", "RunResults", "ReportError", "validate"]
