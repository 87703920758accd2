"""OCR on RapidOCR: PaddleOCR's PP-OCR detection, direction and recognition models as ONNX,
run by onnxruntime. The model folder holds the three .onnx files (their names say which is
which: `det`, `cls`, `rec`); the built-in family's folder is the one the rapidocr-onnxruntime
package carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.catalogue.schemas import ImageFamily
from fleet.engines.base import OCREngine, OCRLine, checked_options
from fleet.engines.launch_options import RapidOCROptions

# Per-request settings a request may pass (Xinference's OCR `kwargs`), with their bounds.
OCR_OPTIONS: dict[str, tuple[float, float]] = {
    "text_score": (0.0, 1.0),  # lines recognised with less confidence are dropped
    "box_thresh": (0.0, 1.0),  # detection boxes scored below this are dropped
    "unclip_ratio": (0.5, 5.0),  # how far a detected box is grown around its text
}
# RapidOCR's own defaults (its config.yaml). Every call passes all three: RapidOCR keeps the
# settings of a call for the calls after it, and one request's must not leak into the next.
OCR_DEFAULTS = {"text_score": 0.5, "box_thresh": 0.5, "unclip_ratio": 1.6}


def _model_file(folder: Path, role: str) -> Path:
    # The folder itself, or its `models` folder (the layout of RapidOCR's package).
    candidates = sorted([*folder.glob("*.onnx"), *folder.glob("models/*.onnx")])
    found = [p for p in candidates if role in p.name.lower()]
    if len(found) != 1:
        names = ", ".join(p.name for p in candidates) or "none"
        raise FileNotFoundError(f"{folder} must hold one .onnx file with {role!r} in its name "
                                f"(found: {names})")
    return found[0]


class RapidOCREngine:
    def __init__(self, model_path: str, family: ImageFamily, device: str | None,
                 options: RapidOCROptions | None = None):
        options = checked_options(options, RapidOCROptions)
        self._folder = Path(model_path)
        self._cuda = bool(device and device.startswith("cuda"))
        self._threads = options.intra_op_num_threads
        self._ocr: Any = None

    def load(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        options: dict[str, Any] = {
            "det_model_path": str(_model_file(self._folder, "det")),
            "cls_model_path": str(_model_file(self._folder, "cls")),
            "rec_model_path": str(_model_file(self._folder, "rec")),
            "det_use_cuda": self._cuda, "cls_use_cuda": self._cuda, "rec_use_cuda": self._cuda,
        }
        if self._threads:
            options["intra_op_num_threads"] = int(self._threads)
        self._ocr = RapidOCR(**options)

    def read(self, image: Any, options: dict[str, float]) -> list[OCRLine]:
        """The text lines of a PIL image, top to bottom, with their boxes (four corners, pixels)
        and recognition scores."""
        import numpy as np

        # RapidOCR reads arrays as OpenCV does: BGR.
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        result, _ = self._ocr(pixels, **{**OCR_DEFAULTS, **options})
        lines = []
        for box, text, score in result or []:
            corners = [[round(float(x), 1), round(float(y), 1)] for x, y in box]
            lines.append(OCRLine(text=str(text), score=round(float(score), 4), box=corners))
        return lines


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[OCREngine] = RapidOCREngine
