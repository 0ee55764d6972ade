"""A REST API and a small web page around a trained run.

    python serve.py --run runs/baseline                 # http://127.0.0.1:8000/

- ``POST /predict`` (multipart field ``file``): the same JSON as ``predict.py --json``
  (``{"model": ..., "results": [one result]}``); ``?spectrogram=true`` adds
  ``spectrogram_png`` (base64 PNG of the mel-spectrogram window the model found most spoof-like).
- ``GET /health``: the model's identity, threshold and feature parameters.
- ``GET /``: a page to choose or drop a file and see the verdict, P(spoof), the window timeline
  and the spectrogram. ``GET /docs``: the OpenAPI documentation.

Errors are JSON ``{"detail": ...}`` with a status code, never a 500 for bad input: 413 for an
upload or a recording over the limits, 415 for what cannot be decoded as audio, 422 for an empty
upload, a recording too short to score, or silence. The model loads once, at start-up, in Keras
safe mode; uploads go to a private temporary folder that is removed after each request; the
server never reads a path sent by a client; it binds to 127.0.0.1 unless told otherwise.
"""

import argparse
import base64
import io
import os
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's INFO/WARNING chatter

import inference
import runs
from features import compute_features, load_audio

# -----------------------------------------------------------------------------
HOST = "127.0.0.1"
PORT = 8000
MAX_UPLOAD_MB = 50.0
MAX_SECONDS = 600.0  # longest recording accepted (10 minutes)
CHUNK = 1 << 20
PAGE = Path(__file__).resolve().parent / "static" / "index.html"
# -----------------------------------------------------------------------------


# HTTP status of each kind of per-file error (`inference.error_kind`); 422 for the others
STATUS = {"undecodable": 415, "too_long": 413}


def spectrogram_png(path, detector, start_s):
    """PNG bytes of the mel-spectrogram window starting at ``start_s`` (as the model saw it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = detector.features
    y = load_audio(path, p["sample_rate"])
    a = int(round(start_s * p["sample_rate"]))
    win = detector.window_samples or y.size
    mel = compute_features(y[a:a + win], p)
    buf = io.BytesIO()
    plt.imsave(buf, mel, origin="lower", cmap="magma", format="png")
    return buf.getvalue()


def create_app(run_dir, which="best", threshold=None, max_upload_mb=MAX_UPLOAD_MB,
               max_seconds=MAX_SECONDS):
    """The FastAPI application, with the run's model loaded once.

    Parameters
    ----------
    run_dir : str or Path
    which : {"best", "final"}
    threshold : float, optional
        Decision threshold on P(spoof) (default: the run's saved threshold, else 0.5).
    max_upload_mb, max_seconds : float
        Limits; over them the answer is 413.
    """
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse

    detector = inference.Detector(run_dir, which, threshold)
    lock = threading.Lock()  # one model call at a time; requests are served concurrently
    max_bytes = int(max_upload_mb * 2**20)
    app = FastAPI(title="Audio deepfake detector",
                  description="EfficientNetB0 on log-mel spectrograms; P(spoof) and ASVspoof "
                              "scores (higher = more bonafide).")

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes + 64 * 1024:
            return JSONResponse({"detail": f"upload larger than {max_upload_mb:g} MB"}, 413)
        return await call_next(request)

    @app.get("/health")
    def health():
        """The model this server runs, its threshold and feature parameters."""
        return {"status": "ok", **detector.identity(), "max_upload_mb": max_upload_mb,
                "max_seconds": max_seconds}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.post("/predict")
    def predict_file(file: UploadFile = File(..., description="an audio file"),
                     spectrogram: bool = Query(False, description="add spectrogram_png")):
        """Score one uploaded recording (any format ffmpeg/libsndfile decode, any rate)."""
        suffix = Path(file.filename or "").suffix.lower()
        suffix = suffix if suffix in inference.AUDIO_EXTENSIONS else ""
        with tempfile.TemporaryDirectory(prefix="deepfake-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            size = 0
            with open(path, "wb") as f:
                while chunk := file.file.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
                    f.write(chunk)
            if size == 0:
                raise HTTPException(422, "empty upload")
            with lock:
                result = next(inference.score_files([path], detector, max_seconds=max_seconds))
                if result["status"] != "ok":
                    raise HTTPException(STATUS.get(result["error_kind"], 422), result["error"])
                result["file"] = file.filename or "upload"
                if spectrogram:
                    top = max((w for w in result["windows"] if w["p_spoof"] is not None),
                              key=lambda w: w["p_spoof"])
                    png = spectrogram_png(path, detector, top["start_s"])
                    result["spectrogram_png"] = base64.b64encode(png).decode("ascii")
                    result["spectrogram_window"] = [top["start_s"], top["end_s"]]
        return {"model": detector.identity(), "results": [result]}

    return app


def build_parser():
    """The command line of serve.py."""
    ap = argparse.ArgumentParser(
        description="Serve a trained run: POST /predict, GET /health, a web page at /.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    inference.add_model_args(ap)
    ap.add_argument("--host", default=HOST, help="address to bind (127.0.0.1 = this machine "
                                                 "only)")
    ap.add_argument("--port", type=int, default=PORT, help="TCP port to listen on")
    ap.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB,
                    help="largest upload accepted (413 above)")
    ap.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                    help="longest recording accepted, in seconds (413 above)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    import uvicorn

    try:
        run = Path(args.run) if args.run else runs.find_latest_run()
        app = create_app(run, args.model, args.threshold, args.max_upload_mb, args.max_seconds)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
