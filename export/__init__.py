"""Export trained runs (SavedModel in TF Serving layout, ONNX)."""
