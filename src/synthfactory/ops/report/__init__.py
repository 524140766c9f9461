"""The report: its building blocks (a leaf module), one module per section, the plots and tables,
and `document.write_report`, which assembles the sections into metrics.json, report.md and
report.html."""
