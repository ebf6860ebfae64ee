"""`accel-signs dashboard`: a page for runs, evaluations, clips, augmentation and data.

The routes are in app.py; the work they serve (scanning runs, cached evaluations, clip and
augmentation payloads, the store's summary) is in runs.py, evaluation.py and clips.py, which
need no socket."""
