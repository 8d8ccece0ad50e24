"""The run store: run folders (paths, formats, statuses, locks), the shipped reference runs, runs as tables."""
