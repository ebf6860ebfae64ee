"""Test bundles for the `tasks` extractor, made from the models MediaPipe 0.10.21's wheel ships.

Google's published `.task` bundles cannot be fetched from here (no internet but the package
registry), but the models inside them ship in that wheel. A `.task` bundle is a zip, stored
without compression, of two TFLite models under fixed names. The hand models work as they are;
the pose and face models need TFLite input-image metadata (NormalizationOptions), which the
Tasks graph reads and the legacy graphs did not: detectors take [-1, 1] (mean 127.5, std 127.5),
landmark models [0, 1] (mean 0, std 255). The installed MediaPipe (>= 0.10.30) writes both the
metadata and the bundle.

These are test fixtures, not Google's bundles: hands and pose match Holistic's to a few
thousandths, the face does not (its points differ by a median 0.06): use it to test the code
path, not to measure the face.

    python tests/make_landmarkers.py OUT_DIR [--wheel mediapipe-0.10.21-....whl]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_VERSION = "0.10.21"
MODULES = "mediapipe/modules/"
# bundle -> {name in the bundle: (model in the wheel, normalisation mean and std or None)}
RECIPES = {
    "hand_landmarker.task": {
        "hand_detector.tflite": ("palm_detection/palm_detection_full.tflite", None),
        "hand_landmarks_detector.tflite": ("hand_landmark/hand_landmark_full.tflite", None),
    },
    "pose_landmarker_full.task": {
        "pose_detector.tflite": ("pose_detection/pose_detection.tflite", (127.5, 127.5)),
        "pose_landmarks_detector.tflite": ("pose_landmark/pose_landmark_full.tflite", (0.0, 255.0)),
    },
    "face_landmarker.task": {
        "face_detector.tflite": ("face_detection/face_detection_short_range.tflite", (127.5, 127.5)),
        "face_landmarks_detector.tflite": ("face_landmark/face_landmark.tflite", (0.0, 255.0)),
    },
}


def fetch_wheel(into: Path) -> Path:
    """MediaPipe 0.10.21's wheel, downloaded (no install) for any Python: only its model files are used."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", f"mediapipe=={WHEEL_VERSION}", "--no-deps"]
        + ["--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", str(into)],
        check=True,
    )
    return next(into.glob(f"mediapipe-{WHEEL_VERSION}-*.whl"))


def _parser_version_helper() -> None:
    """MediaPipe >= 0.10.30's wheels lack the one compiled helper of its metadata writer, which
    only computes the minimum metadata-parser version to write in the file; the image
    normalisation fields written here date from the first version of the schema, 1.0.0."""
    import sys
    import types

    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    try:
        __import__(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for i in range(3, len(parts) + 1):  # mediapipe.tasks exists; its missing packages, then the helper
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for i in range(3, len(parts)):
        setattr(sys.modules[".".join(parts[:i])], parts[i], sys.modules[".".join(parts[: i + 1])])
    sys.modules[name].GetMinimumMetadataParserVersion = lambda *args: "1.0.0"


def with_image_metadata(model: bytes, name: str, mean: float, std: float) -> bytes:
    _parser_version_helper()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, "test fixture from MediaPipe 0.10.21's wheel")
    writer.add_image_input(norm_mean=[mean], norm_std=[std])
    content, _ = writer.populate()
    return bytes(content)


def make_bundles(out: Path, wheel: Path | None = None) -> Path:
    """Write the three bundles into `out`; returns `out`."""
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or fetch_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for bundle, members in RECIPES.items():
                models = {}
                for inner, (source, norm) in members.items():
                    data = zf.read(MODULES + source)
                    models[inner] = data if norm is None else with_image_metadata(data, inner, *norm)
                tmp_bundle = out / f".{bundle}.tmp"
                model_asset_bundle_utils.create_model_asset_bundle(models, str(tmp_bundle))  # stored, aligned
                tmp_bundle.replace(out / bundle)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--wheel", type=Path, default=None)
    args = parser.parse_args()
    print(make_bundles(args.out, args.wheel))
