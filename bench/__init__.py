"""The breakglass benchmark: `python -m bench --help`. See bench/README.md."""
