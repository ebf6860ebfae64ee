"""Keypoint extractors: MediaPipe behind one `Tracker` interface (frames in, keypoints in a layout out).

- `tasks`: MediaPipe's Tasks landmarkers (pose, face, hands; >= 0.10.30), VIDEO or IMAGE mode,
  with the model bundles from `bundles` (a cache, or `--landmarkers DIR`);
- `holistic`: the legacy `mp.solutions.holistic` (MediaPipe <= 0.10.21, whose wheel holds its models).

`choose.ExtractorChoice` names one (`--extractor`) and opens its trackers. A layer of its own: above
data/ (layouts, the ExtractorRecord), below tools/ and serve/, which use it.
"""

# --extractor's values. auto: the installed MediaPipe's (>= 0.10.30: tasks; <= 0.10.21: holistic);
# for predict and serve, the checkpoint's. tasks-image: the Tasks landmarkers on each frame alone;
# seed: the seed's recipe (IMAGE mode, one hand per frame).
CHOICES = ("auto", "tasks", "tasks-image", "seed", "holistic")
HELP = (
    "Which MediaPipe makes the keypoints: tasks (the Tasks landmarkers, video mode), tasks-image (each frame "
    "alone), seed (the seed's recipe: image mode, 1 hand), holistic (legacy, MediaPipe <= 0.10.21), or auto "
    "(the installed MediaPipe's; predict and serve: the checkpoint's)."
)
LANDMARKERS_HELP = (
    "Folder of MediaPipe .task bundles for the tasks extractors (default: downloaded once into "
    "$ACCEL_SIGNS_CACHE/landmarkers, else ~/.cache/accel_signs/landmarkers)."
)
