"""The report: its building blocks (a leaf module), one module per section, the plots and tables,
and `document.write_report`, which assembles the sections into metrics.json, report.md and
report.html."""

# The report's files (the rest are its PNGs and tables.ARMS_CSV); the CLI and dvc.yaml name them.
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
