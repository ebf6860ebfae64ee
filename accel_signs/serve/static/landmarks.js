// MediaPipe in the page: the Pose, Hand and Face landmarkers of MediaPipe Tasks for Web (vendored
// under vendor/tasks-vision, no CDN) in VIDEO mode on the camera's frames, their landmarks put in
// the checkpoint's layout exactly as the server's Python Tasks backend puts them. The model
// bundles (.task) come from the server's landmarker cache: the files the Python backend runs.

const VENDOR = new URL("./vendor/tasks-vision/", import.meta.url);
// Holistic's and the Python backend's thresholds: a part under them counts as not detected.
const CONFIDENCE = 0.5;

// Which landmarker fills which of the layout's sources.
const NEEDS = { pose: "pose", face: "face", left_hand: "hands", right_hand: "hands" };

export class BrowserTracker {
  // model: the server's hello (layout.sources, landmarkers: bundle URLs by landmarker name)
  static async create(model) {
    const sources = model.layout.sources;
    if (!sources || sources.some((s) => !s)) throw new Error(`layout ${model.layout.name} does not name its MediaPipe sources`);
    const wanted = new Set(sources.map(([source]) => NEEDS[source]));
    const bundles = model.landmarkers || {};
    const missing = [...wanted].filter((name) => !bundles[name]);
    if (missing.length) throw new Error(`the server has no ${missing.join(", ")} landmarker bundle`);
    if (!WebAssembly.validate(SIMD_PROBE)) throw new Error("this browser's WebAssembly has no SIMD");
    const vision = await import(new URL("vision_bundle.mjs", VENDOR).href);
    const fileset = await vision.FilesetResolver.forVisionTasks(new URL("wasm", VENDOR).href.replace(/\/$/, ""));
    const base = (name) => ({ baseOptions: { modelAssetPath: new URL(bundles[name], document.baseURI).href, delegate: "CPU" }, runningMode: "VIDEO" });
    const tracker = new BrowserTracker(sources, vision);
    if (wanted.has("pose")) {
      tracker.pose = await vision.PoseLandmarker.createFromOptions(fileset, {
        ...base("pose"), numPoses: 1, minPoseDetectionConfidence: CONFIDENCE,
        minPosePresenceConfidence: CONFIDENCE, minTrackingConfidence: CONFIDENCE,
      });
    }
    if (wanted.has("hands")) {
      tracker.hand = await vision.HandLandmarker.createFromOptions(fileset, {
        ...base("hands"), numHands: 2, minHandDetectionConfidence: CONFIDENCE,
        minHandPresenceConfidence: CONFIDENCE, minTrackingConfidence: CONFIDENCE,
      });
    }
    if (wanted.has("face")) {
      tracker.face = await vision.FaceLandmarker.createFromOptions(fileset, {
        ...base("face"), numFaces: 1, minFaceDetectionConfidence: CONFIDENCE,
        minFacePresenceConfidence: CONFIDENCE, minTrackingConfidence: CONFIDENCE,
      });
    }
    return tracker;
  }

  constructor(sources, vision) {
    this.sources = sources;
    this.last = -1;  // VIDEO mode wants strictly increasing timestamps (ms)
    this.faceContours = new Set(vision.FaceLandmarker.FACE_LANDMARKS_CONTOURS.flatMap((c) => [c.start, c.end]));
  }

  // One frame (a video element or a canvas) -> { points: (P, 4) rows in the layout, zeros where
  // undetected; person; hands }.
  detect(image, nowMs) {
    const t = Math.max(Math.round(nowMs), this.last + 1);
    this.last = t;
    const found = { pose: null, face: null, left_hand: null, right_hand: null };
    if (this.pose) {
      const r = this.pose.detectForVideo(image, t);
      if (r.landmarks.length) found.pose = r.landmarks[0].map((p) => [p.x, p.y, p.z, p.visibility ?? 1]);
    }
    if (this.face) {
      const r = this.face.detectForVideo(image, t);
      if (r.faceLandmarks.length) found.face = r.faceLandmarks[0].map((p) => [p.x, p.y, p.z, 1]);
    }
    if (this.hand) {
      const r = this.hand.detectForVideo(image, t);
      const hands = r.landmarks.map((hand) => hand.map((p) => [p.x, p.y, p.z, 1]));
      [found.left_hand, found.right_hand] = slots(hands, r.handedness.map((h) => h[0].categoryName), found.pose);
    }
    const points = this.sources.map(([source, index]) => {
      const part = found[source];
      return part && index < part.length ? part[index].map(round) : [0, 0, 0, 0];
    });
    return { points, person: found.pose !== null, hands: found.left_hand !== null || found.right_hand !== null };
  }

  close() {
    for (const task of [this.pose, this.hand, this.face]) if (task) task.close();
  }
}

// (left, right): the signer's left and right hand among those found, exactly as the Python tasks
// backend decides (extractors/tasks.py, _slots). With a pose, by its wrists (15 left, 16 right):
// the pairing with the smaller total distance, as Holistic crops each hand around a wrist.
// Without one, by the label: "Left" is the signer's left hand in the camera's own (unmirrored)
// frames, which are what MediaPipe sees here (the page's mirror is CSS only).
export function slots(hands, labels, pose) {
  if (!hands.length) return [null, null];
  const dist = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1]);
  if (pose) {
    const [left, right] = [pose[15], pose[16]];
    if (hands.length === 1) return dist(hands[0][0], left) < dist(hands[0][0], right) ? [hands[0], null] : [null, hands[0]];
    const [a, b] = [hands[0][0], hands[1][0]];
    const straight = dist(a, left) + dist(b, right), crossed = dist(a, right) + dist(b, left);
    return straight <= crossed ? [hands[0], hands[1]] : [hands[1], hands[0]];
  }
  if (hands.length === 1) return labels[0] === "Left" ? [hands[0], null] : [null, hands[0]];
  const first = labels[0] === "Left" || labels[1] !== "Left" ? 0 : 1;  // both the same label: as found
  return [hands[first], hands[1 - first]];
}

// 6 decimals: a millionth of the frame, far under MediaPipe's own jitter, and short messages.
const round = (v) => Math.round(v * 1e6) / 1e6;

// A module using one SIMD instruction (i8x16.splat... v128): valid only where WebAssembly SIMD is.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);
