"""MNIST Lab dashboard: Streamlit views over `core` (entry: dashboard/app.py)."""
