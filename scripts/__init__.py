"""The project's scripts, run as modules from the repository root (`python -m scripts.NAME`):
screenshots, the tables of docs/tables/, shipping reference runs, the dashboard and Sketch
benchmarks, and `harness`, the Streamlit-in-Chromium helpers they share with tests/e2e."""
