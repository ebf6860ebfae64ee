"""What a user does with a trained model, beyond training: predict and ONNX export
(inference), MediaPipe extraction from videos, the skeleton animation (show), summaries (info).
Imports every layer below it, never train's loop."""
