"""A REST API and a small web page around a trained run.

    python serve.py --run runs/baseline                 # http://127.0.0.1:8000/

- ``POST /predict`` (multipart field ``file``): the same JSON as ``predict.py --json``
  (``{"model": ..., "results": [one result]}``); ``?spectrogram=true`` adds
  ``spectrogram_png`` (base64 PNG of the mel-spectrogram of the most spoof-like of the windows
  that decided the verdict, ``deciding_windows``), ``spectrogram_window`` (its span, s) and
  ``spectrogram_hz`` (the frequencies it covers).
- ``GET /health``: the model's identity, threshold and feature parameters.
- ``GET /``: a page that names the loaded model, takes a chosen or dropped file and shows the
  verdict, P(spoof), the window timeline (the windows that decided marked) and the spectrogram
  with its axes. ``GET /docs``: the OpenAPI documentation.

Errors are JSON ``{"detail": ...}`` with a status code, never a 500 for bad input: 413 for an
upload or a recording over the limits, 415 for what cannot be decoded as audio, 422 for an empty
upload, a recording too short to score, silence or non-finite samples, 503 when the server is
too busy to answer within ``--wait-seconds``.

Cost is bounded before work starts: the upload size is counted while the body streams in (a
request without Content-Length, chunked, is cut off the moment it passes ``--max-upload-mb``),
a recording's duration is read from its header before decoding (and decoding stops at
``--max-seconds`` whatever the header says), at most ``--decoders`` uploads are decoded at
once, and only the model calls hold the model lock, one batch at a time and first come, first
served: a request waits for at most the batch in progress and one batch of each request before
it, never for a whole long recording (docs/reference.md, "Fairness"). The model loads once,
at start-up, in Keras safe mode; uploads go to a private temporary folder that is removed
after each request; the server never reads a path sent by a client, never echoes its own
paths or a client's bytes back; it binds to 127.0.0.1 unless told otherwise.
"""

import argparse
import base64
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from deepfake_detector import display, inference, runs
from deepfake_detector.cli import HelpFormatter, number
from deepfake_detector.features import AudioError

# -----------------------------------------------------------------------------
HOST = "127.0.0.1"
PORT = 8000
MAX_UPLOAD_MB = 50.0
MAX_SECONDS = 600.0  # longest recording accepted (10 minutes)
DECODERS = max(1, (os.cpu_count() or 1))  # uploads decoded at once
WAIT_SECONDS = 30.0  # longest wait for a decoding slot or the model's first batch before a 503
PENDING_PER_DECODER = 4  # decoded recordings that may wait for the model, per decoder
CHUNK = 1 << 20
HEADER_SECONDS = 10.0  # a request's headers must be complete this long after they start
BODY_SECONDS = 30.0  # longest silence between two pieces of a request body (an upload)
DRAIN_SECONDS, DRAIN_BYTES = 1.0, 64 << 20  # read and dropped after a 413, so it arrives
PAGE = Path(__file__).resolve().parent / "static" / "index.html"
# HTTP status of each kind of per-file error (`inference.error_kind`); 422 for the others
STATUS = {"undecodable": 415, "too_long": 413}
# -----------------------------------------------------------------------------


def guarded_protocol(header_seconds=HEADER_SECONDS, body_seconds=BODY_SECONDS):
    """uvicorn's h11 HTTP protocol with two deadlines it lacks (slowloris): a connection whose
    request headers are not complete ``header_seconds`` after the connection (or the previous
    response) is closed, however slowly bytes keep dripping in; and one whose request body goes
    ``body_seconds`` without a byte is closed. A request fully received is never cut: scoring
    it may take as long as it takes (``--wait-seconds`` bounds that)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Guarded(H11Protocol):
        _guard = None

        def _arm(self, seconds):
            self._disarm()
            self._guard = self.loop.call_later(seconds, self._expire)

        def _disarm(self):
            if self._guard is not None:
                self._guard.cancel()
                self._guard = None

        def _expire(self):
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm(header_seconds)

        def data_received(self, data):
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.SEND_BODY:  # headers done: now the body may not stall
                self._arm(body_seconds)
            elif state is not h11.IDLE:  # the request is in: the application has it
                self._disarm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm(header_seconds)  # the next request on this connection

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

    return Guarded


class LimitBody:
    """ASGI middleware: a request body may not exceed ``max_bytes``. Content-Length is checked
    first; the bytes actually received are counted too, so a chunked upload without a length is
    answered 413 as soon as it passes the limit, before it is spooled anywhere: the application
    is told the client left, and whatever it answers then is dropped."""

    def __init__(self, app, max_bytes, limit_mb):
        self.app, self.max_bytes, self.limit_mb = app, max_bytes, limit_mb

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self.refuse(receive, send)
        received, refused = 0, False

        async def counted():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                refused = True
                await self.refuse(receive, send)
                return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded)

    async def refuse(self, receive, send):
        """Answer 413 at once, then read and drop what the client still sends for a moment
        (at most `DRAIN_SECONDS` and `DRAIN_BYTES`): closing a connection with unread data would
        reset it, and the client could lose the answer."""
        import asyncio
        import json

        body = json.dumps({"detail": f"upload larger than {self.limit_mb:g} MB"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body.encode()})
        loop = asyncio.get_running_loop()
        drained, deadline = 0, loop.time() + DRAIN_SECONDS
        while drained < DRAIN_BYTES and loop.time() < deadline:
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            drained += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break


def spectrogram_png(mel):
    """PNG bytes of one mel-spectrogram window, as the model saw it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, mel, origin="lower", cmap="magma", format="png")
    return buf.getvalue()


def add_spectrogram(result, mels, detector):
    """Add the PNG (base64) of the most spoof-like of the windows that decided the verdict
    (``deciding_windows``), its span in seconds and the frequencies it covers in Hz (every
    front end here spans 0 to half the sample rate: the mel arrays, Whisper's log-mel and the
    128 x 128 log-mel drawn for AASIST)."""
    deciding = [j for j in result["deciding_windows"] if mels[j] is not None]
    top = max(deciding, key=lambda j: result["windows"][j]["p_spoof"])
    picture = detector.spectrogram(mels[top])
    result["spectrogram_png"] = base64.b64encode(spectrogram_png(picture)).decode()
    w = result["windows"][top]
    result["spectrogram_window"] = [w["start_s"], w["end_s"]]
    params = detector.features
    result["spectrogram_hz"] = [float(params.get("fmin") or 0.0),
                                float(params.get("fmax") or params["sample_rate"] / 2)]


def create_app(run_dir, which="best", threshold=None, max_upload_mb=MAX_UPLOAD_MB,
               max_seconds=MAX_SECONDS, decoders=DECODERS, wait_seconds=WAIT_SECONDS,
               decode_in_lock=False):
    """The FastAPI application, with the run's model loaded once (``app.state.detector``).

    Parameters
    ----------
    run_dir : str or Path
    which : {"best", "final"}
    threshold : float, optional
        Decision threshold on P(spoof) (default: the run's saved threshold, else 0.5).
    max_upload_mb, max_seconds : float
        Limits; over them the answer is 413.
    decoders, wait_seconds : int, float
        Uploads decoded at once (each holds at most ``max_seconds`` of audio); longest wait
        for a decoding slot, and then for the model, before a 503.
    decode_in_lock : bool
        Decode inside the model lock, as this server did before: for benchmarks/run.py's
        before/after comparison only.
    """
    from fastapi import FastAPI, File, Query, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse

    detector = inference.Detector(run_dir, which, threshold)
    locks = Locks(decoders)
    max_bytes = int(max_upload_mb * 2**20)
    app = FastAPI(title="Audio deepfake detector",
                  description="P(spoof) of recordings and ASVspoof scores (higher = more "
                              "bonafide), from a run of this project's train.py.")
    app.add_middleware(LimitBody, max_bytes=max_bytes + 64 * 1024,  # + multipart framing
                       limit_mb=max_upload_mb)
    app.state.detector = detector  # main() logs what it loaded

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        # FastAPI's default would echo the client's input (an upload's bytes) back
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")}
                                        for e in exc.errors()]}, 422)

    @app.get("/health")
    def health():
        """The model this server runs, its threshold and feature parameters."""
        return {"status": "ok", **detector.identity(public=True),
                "max_upload_mb": max_upload_mb, "max_seconds": max_seconds}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.post("/predict")
    def predict_file(file: UploadFile = File(..., description="an audio file"),
                     spectrogram: bool = Query(False, description="add spectrogram_png")):
        """Score one uploaded recording (any format ffmpeg/libsndfile decode, any rate)."""
        result, mels = handle_upload(file, detector, locks, max_bytes, max_seconds,
                                     wait_seconds, decode_in_lock)
        result["file"] = file.filename or "upload"
        if spectrogram:
            add_spectrogram(result, mels, detector)
        return {"model": detector.identity(public=True), "results": [result]}

    return app


def decode_upload(path, detector, max_seconds):
    """`inference.analyze` of a saved upload (decoding and features, no model), its failures
    turned into HTTP errors by their kind (`STATUS`)."""
    from fastapi import HTTPException

    try:
        return inference.analyze(path, detector, max_seconds=max_seconds)
    except AudioError as e:
        raise HTTPException(STATUS.get(e.kind, 422), str(e)) from None
    except MemoryError:
        raise HTTPException(413, "recording too large to decode") from None


def score_decoded(analyzed, detector, model_lock, timeout):
    """`inference.score_windows` of a decoded upload; 503 naming the true reason when the
    model stays busy past ``timeout`` before its first batch."""
    from fastapi import HTTPException

    info, spans, mels = analyzed
    try:
        result = inference.score_windows(info, spans, mels, detector,
                                         model_lock=model_lock, timeout=timeout)
    except inference.Busy:
        raise HTTPException(503, f"busy: the model is scoring other recordings "
                                 f"({model_lock.waiting} batches queued); try again") from None
    return {"file": "upload", **result}, mels


class Locks:
    """What a server's requests share: the model (`inference.FairLock`: one batch at a time,
    first come, first served), ``decoders`` decoding slots (bounded decoding memory and CPU),
    and `PENDING_PER_DECODER` x ``decoders`` places for decoded recordings waiting for the
    model (their features in memory, at most ``max_seconds`` each)."""

    def __init__(self, decoders):
        self.decoders = decoders
        self.model = inference.FairLock()
        self.slots = threading.BoundedSemaphore(decoders)
        self.pending = threading.BoundedSemaphore(PENDING_PER_DECODER * decoders)


def handle_upload(file, detector, locks, max_bytes, max_seconds, wait_seconds,
                  decode_in_lock=False):
    """One upload: saved and decoded in a decoding slot, then scored batch by batch; returns
    ``(result, mels)`` as `inference.score_one`, or raises an ``HTTPException`` (413, 415, 422,
    503 naming the true reason, 507)."""
    from fastapi import HTTPException

    deadline = time.monotonic() + wait_seconds
    suffix = Path(file.filename or "").suffix.lower()
    suffix = suffix if suffix in inference.AUDIO_EXTENSIONS else ""
    if not locks.pending.acquire(timeout=wait_seconds):
        raise HTTPException(503, f"busy: {PENDING_PER_DECODER * locks.decoders} recordings are "
                                 f"waiting for the model ({locks.model.waiting} batches "
                                 "queued); try again in a minute")
    try:
        # a decoding slot: at most `decoders` uploads on disk and being decoded at once
        if not locks.slots.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise HTTPException(503, f"busy: {locks.decoders} other recordings are being "
                                     "decoded; try again")
        try:
            with tempfile.TemporaryDirectory(prefix="deepfake-upload-") as tmp:
                path = Path(tmp) / f"upload{suffix}"
                if save_upload(file, path, max_bytes) == 0:
                    raise HTTPException(422, "empty upload")
                if decode_in_lock:  # the old way, for benchmarks: all under the model lock
                    with locks.model:
                        result, mels = score_decoded(decode_upload(path, detector, max_seconds),
                                                     detector, None, None)
                else:
                    analyzed = decode_upload(path, detector, max_seconds)
        except OSError as e:  # a full temporary folder: the server's fault, said as such
            raise HTTPException(507, "the server has no room for the upload right now "
                                     f"({e.strerror or type(e).__name__}); try again "
                                     "later") from None
        finally:
            locks.slots.release()
        if not decode_in_lock:  # the model, one batch at a time, shared fairly
            result, mels = score_decoded(analyzed, detector, locks.model,
                                         deadline - time.monotonic())
    finally:
        locks.pending.release()
    return result, mels


def save_upload(file, path, max_bytes):
    """Copy an upload to ``path`` chunk by chunk (413 past ``max_bytes``); returns its size."""
    from fastapi import HTTPException

    size = 0
    with open(path, "wb") as f:
        while chunk := file.file.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(413, f"upload larger than {max_bytes / 2**20:g} MB")
            f.write(chunk)
    return size


def build_parser():
    """The command line of serve.py."""
    ap = argparse.ArgumentParser(
        description="Serve a trained run: POST /predict, GET /health, a web page at /.",
        formatter_class=HelpFormatter)
    inference.add_model_args(ap)
    ap.add_argument("--host", default=HOST, help="address to bind (127.0.0.1 = this machine "
                                                 "only)")
    ap.add_argument("--port", type=number(int, 0, 65535), default=PORT,
                    help="TCP port to listen on (0: any free port)")
    ap.add_argument("--max-upload-mb", type=number(float, 0, 10240, above=True),
                    default=MAX_UPLOAD_MB,
                    help="largest upload accepted (413 above, counted as it streams in)")
    ap.add_argument("--max-seconds", type=number(float, 0, 86400, above=True), default=MAX_SECONDS,
                    help="longest recording accepted, in seconds (413 above, read from the "
                         "header before decoding)")
    ap.add_argument("--decoders", type=number(int, 1, 64), default=DECODERS,
                    help="uploads decoded at the same time (bounds memory and CPU)")
    ap.add_argument("--header-timeout", type=number(float, 0, 3600, above=True),
                    default=HEADER_SECONDS,
                    help="seconds a client has to send a request's headers (slow or stalled "
                         "clients are disconnected)")
    ap.add_argument("--body-timeout", type=number(float, 0, 3600, above=True),
                    default=BODY_SECONDS,
                    help="longest silence, in seconds, within a request's body (an upload "
                         "that stalls is disconnected)")
    ap.add_argument("--wait-seconds", type=number(float, 0, 3600, above=True),
                    default=WAIT_SECONDS,
                    help="longest a request waits for a decoding slot and the model (503 "
                         "after that)")
    return ap


def startup_message(detector):
    """What the server loaded, for its log: run, model, threshold and its source, what the
    model was trained on, and the demo warning when it applies."""
    lines = [f"serving {detector.run_dir} ({detector.model_path.name}): threshold "
             f"{display.format_threshold(detector.threshold)} ({detector.threshold_source}); "
             f"{detector.trained_on}"]
    if detector.warning:
        lines.append(f"warning: this model was {detector.warning}")
    return "\n".join(lines)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    import uvicorn

    try:
        run = Path(args.run) if args.run else runs.find_latest_run()
        app = create_app(run, args.model, args.threshold, args.max_upload_mb, args.max_seconds,
                         args.decoders, args.wait_seconds)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(startup_message(app.state.detector), file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info",
                http=guarded_protocol(args.header_timeout, args.body_timeout))


if __name__ == "__main__":
    main()
