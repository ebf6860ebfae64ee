"""Live recognition: `accel-signs serve CHECKPOINT` serves a web page and a WebSocket endpoint.

The browser sends camera (or uploaded video) frames as JPEG; each connection gets its own
MediaPipe tracker, ring buffer and sign acceptor (pipeline.py, testable without a socket);
the routes, limits and backpressure live in app.py; the page is plain HTML, CSS and
JavaScript modules in static/, served by the package (no build step, nothing from the internet).
FastAPI and uvicorn are the optional `serve` extra.
"""
