"""Stage 3: the HTML report of a run folder (`write_report(run_dir) -> run_dir/report.html`)."""
from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
