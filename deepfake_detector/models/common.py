"""What every model family shares: quiet TensorFlow import, the ``InferenceMode`` wrapper for
frozen backbones, compilation, fine-tuning of a backbone's top blocks, the head-only model of the
feature cache, logits, and saving/loading ``.keras`` files with embedded metadata.

The families themselves live beside this module, one file each (`efficientnet`, `lcnn`,
`whisper`); `deepfake_detector.models` (the package) maps ``--model NAME`` to them. Every family
ends in a ``p_spoof`` layer, Dense(1, sigmoid) = P(spoof); label 1 = spoof.

Every saved ``.keras`` archive carries the feature parameters, label convention and input
transform inside it (``deepfake_meta.json``), so evaluation and prediction use exactly what
training used. Models load in Keras safe mode (no arbitrary code).
"""

import json
import weakref
import zipfile

import numpy as np

from ..atomic import atomic_output

# -----------------------------------------------------------------------------
LEARNING_RATE = 1e-4  # the design card's Adam learning rate
PREDICT_BATCH_SIZE = 32  # prediction batch: fastest on a 2-core CPU (149 files/s vs 98 at 256)
META_NAME = "deepfake_meta.json"  # metadata file stored inside each .keras archive
LR_SCHEDULES = ("constant", "cosine")
KERAS_PACKAGE = "deepfake_detector"  # the package name every custom layer is registered under
# -----------------------------------------------------------------------------


def load_tensorflow():
    """Import TensorFlow and Keras quietly, once: the one place the project imports them.

    On a CPU-only machine TensorFlow's C++ runtime prints about seven lines to stderr while it
    loads and probes for GPUs (absl's "log messages before absl::InitializeLog()", oneDNN and
    "Could not find cuda drivers" notes, and ``E0000 ... failed call to cuInit``, which reads
    like a failure and is not one). They are written before its log level applies, so stderr
    (file descriptor 2) is muted while TensorFlow loads and finds its devices, and restored at
    once: every later warning and error still shows. Python-side TensorFlow and absl logs are
    kept at ERROR (their warnings are about graph retracing, not about results).

    Returns
    -------
    tf, keras : module
    """
    import os
    import sys

    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                import tensorflow as tf

                tf.config.list_physical_devices()  # the GPU probe, while muted
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel("ERROR")
    import keras
    import tensorflow as tf

    return tf, keras


class WeightsUnavailable(RuntimeError):
    """The requested backbone weights (or the library that loads them) cannot be loaded."""



_INFERENCE_MODE = []


def inference_mode_layer():
    """The ``InferenceMode`` wrapper layer class, defined and registered with Keras on first use
    (so that importing this module does not import Keras)."""
    if _INFERENCE_MODE:
        return _INFERENCE_MODE[0]
    _, keras = load_tensorflow()

    @keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
    class InferenceMode(keras.layers.Wrapper):
        """Runs the wrapped layer in inference mode always (Dropout and BatchNorm included).

        Keras 3 functional models pass the outer call's ``training`` flag to every nested
        layer, overriding a ``training=False`` written when the graph was built; without this
        wrapper EfficientNet's stochastic-depth Dropout layers would stay active in a "frozen"
        backbone during ``fit``.
        """

        def call(self, inputs, training=None):
            return self.layer(inputs, training=False)

        def compute_output_shape(self, input_shape):
            return self.layer.compute_output_shape(input_shape)

    _INFERENCE_MODE.append(InferenceMode)
    return InferenceMode


def compile_model(model, learning_rate=LEARNING_RATE, steps_per_execution=1, weight_decay=0.0,
                  decay_steps=None):
    """Compile with binary cross-entropy and metrics where spoof is positive.

    Parameters
    ----------
    learning_rate : float
        Adam's (initial) learning rate.
    steps_per_execution : int
        Training steps per compiled call (> 1: the same updates, less Python overhead per step).
    weight_decay : float
        Decoupled weight decay (AdamW, Loshchilov & Hutter, ICLR 2019); 0 = Adam, the design
        card's optimizer.
    decay_steps : int, optional
        Cosine decay of the learning rate to 0 over this many steps (Loshchilov & Hutter,
        "SGDR", ICLR 2017); None = constant.
    """
    _, keras = load_tensorflow()

    lr = (keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps) if decay_steps
          else learning_rate)
    optimizer = (keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
                 if weight_decay else keras.optimizers.Adam(learning_rate=lr))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(),
        # no keras.metrics.AUC: its fixed thresholds cannot resolve scores packed near 0.5;
        # callbacks.make_validation_callback logs a rank-based val_auc instead
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"),
                 keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],
        steps_per_execution=steps_per_execution)
    return model


def param_counts(model):
    """``{"trainable": n, "non_trainable": n}`` weights of ``model``."""
    count = lambda ws: int(sum(np.prod(w.shape) for w in ws))  # noqa: E731
    return {"trainable": count(model.trainable_weights),
            "non_trainable": count(model.non_trainable_weights)}


# ----------------------------------------------------------------------------- parts


def backbone_of(model):
    """The frozen backbone inside a model of a family with one (EfficientNetB0's, the Whisper
    encoder): the layer wrapped by ``backbone``."""
    return model.get_layer("backbone").layer


def backbone_blocks(backbone, block_of):
    """The backbone's blocks, input to output.

    Parameters
    ----------
    backbone : keras.Model
    block_of : callable
        Layer name -> the name of its block, or None for a layer outside the blocks (each
        family's ``block_of``).

    Returns
    -------
    names : list of str
    """
    names = []
    for layer in backbone.layers:
        block = block_of(layer.name)
        if block and block not in names:
            names.append(block)
    return names


def unfreeze_blocks(backbone, n_blocks, block_of, is_top, what):
    """Make the last ``n_blocks`` blocks of ``backbone`` trainable (`backbone_blocks`), and the
    layers for which ``is_top(name)`` holds (what follows the blocks); everything else stays
    frozen, and every BatchNormalization layer stays frozen (trainable=False, which in Keras
    also means inference mode; the backbone wrapper runs in inference mode anyway). The
    standard second phase of transfer learning (keras-io "Image classification via fine-tuning
    with EfficientNet").

    Returns
    -------
    blocks : list of str
        The unfrozen blocks.
    """
    _, keras = load_tensorflow()

    blocks = backbone_blocks(backbone, block_of)
    if not 1 <= n_blocks <= len(blocks):
        raise ValueError(f"--fine-tune-blocks must be between 1 and {len(blocks)} (the "
                         f"{what}), got {n_blocks}")
    chosen = set(blocks[-n_blocks:])
    backbone.trainable = True  # sets every layer; then choose
    for layer in backbone.layers:
        layer.trainable = ((block_of(layer.name) in chosen or is_top(layer.name))
                           and not isinstance(layer, keras.layers.BatchNormalization))
    return blocks[-n_blocks:]


# the layers after the cached features: the design-card head (EfficientNetB0, Whisper), or
# AASIST's graph attention back end (train.py --freeze-encoder)
HEADS = (("dense", "dropout", "p_spoof"), ("graph", "dropout", "p_spoof"))


def head_layers(model):
    """The names of ``model``'s layers after its cacheable features (`HEADS`), input to
    output."""
    names = {layer.name for layer in model.layers}
    for head in HEADS:
        if set(head) <= names:
            return head
    raise ValueError(f"model {model.name} has no head over cacheable features")


def feature_extractor(model):
    """The frozen part of ``model``: its input -> the input of its head (`head_layers`):
    pooled features, (batch, 1280) for EfficientNetB0, (batch, hidden_dim) for Whisper (384 in
    tiny); AASIST's encoder output, (batch, time, freq, channels) = (batch, 29, 23, 64), 24
    channels in AASIST-L."""
    _, keras = load_tensorflow()

    return keras.Model(model.input, model.get_layer(head_layers(model)[0]).input,
                       name="extractor")


def encoder_frozen(model):
    """Whether nothing before ``model``'s head trains (a frozen backbone, or AASIST with
    ``--freeze-encoder``): its features can then be computed once and cached."""
    first = model.get_layer(head_layers(model)[0])
    before = model.layers[:model.layers.index(first)]
    return all(not layer.trainable_weights for layer in before)  # fixed mel filters are fine


def head_model(model, learning_rate=LEARNING_RATE, steps_per_execution=32, weight_decay=0.0,
               decay_steps=None):
    """A compiled model over the cached features (`feature_extractor`) that shares
    ``model``'s head layers (`head_layers`): training it trains ``model``.

    Returns
    -------
    head : keras.Model
        Input (batch, *features) -> output (batch, 1) = P(spoof); 1280 features for
        EfficientNetB0.
    """
    _, keras = load_tensorflow()

    names = head_layers(model)
    cached = model.get_layer(names[0]).input
    x = inputs = keras.Input(shape=cached.shape[1:], name="pooled_features")
    for name in names:
        x = model.get_layer(name)(x)
    # steps on 1280 numbers take microseconds: Keras' per-step overhead would dominate
    return compile_model(keras.Model(inputs, x, name="head"), learning_rate,
                         steps_per_execution, weight_decay, decay_steps)


def head_hidden(model, features):
    """``model``'s head up to its last layer, on cached features (inference mode): the
    input of `logit_parts`' kernel, shape (n, units)."""
    x = np.asarray(features)
    for name in head_layers(model)[:-1]:
        x = model.get_layer(name)(x)
    return np.asarray(x)


def backbone_key(model):
    """A fingerprint of every weight before the pooled features (cache key): the backbone's,
    and for Whisper the mel filters of its front end. Same key, same features."""
    import hashlib

    h = hashlib.sha1()
    for w in feature_extractor(model).weights:
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:16]


def logit_parts(model):
    """The model up to its last layer, and that layer's weights: ``logit = hidden(x) @ kernel +
    bias`` is log(P(spoof) / P(bonafide)), taken before the sigmoid so extreme scores stay finite.

    Returns
    -------
    hidden : keras.Model
        Image batch (n, 128, 128, 3) -> (n, dense_units).
    kernel, bias : np.ndarray, float64
    """
    _, keras = load_tensorflow()

    head = model.get_layer("p_spoof")
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in head.get_weights())
    return keras.Model(model.input, head.input), kernel, bias


def logits_from_hidden(hidden, kernel, bias):
    """The last layer, before its sigmoid: ``hidden @ kernel + bias`` in float64, shape (n,)."""
    return (np.asarray(hidden, np.float64) @ kernel + bias).reshape(-1)


def batch_function(model):
    """``model`` in inference mode as one compiled function for every batch size:
    ``f(x) -> np.ndarray``, the same numbers ``model.predict_on_batch(x)`` gives.

    Keras traces its predict graph again for each new batch size, e.g. a corpus's last,
    partial batch (about 1.2 s for EfficientNetB0 on 2 cores). This function is traced once,
    with the batch dimension left open, for paths that run many batches (evaluate.py, the
    feature cache); its first call is slower than a fixed shape's (about 0.5 s more for
    AASIST-L), so predict.py and serve.py, which often score one small batch, keep Keras'.

    Parameters
    ----------
    model : keras.Model
        One input of shape (batch, ...).

    Returns
    -------
    f : callable
        ``f(x)``, x of shape (n, *model input shape[1:]) -> np.ndarray of shape (n, ...).
    """
    tf, _ = load_tensorflow()

    if len(model.inputs) != 1:
        return model.predict_on_batch
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda x: np.asarray(fn(tf.convert_to_tensor(x, spec.dtype)))


def predict_logits(model, ds, progress=False, total=None, with_hidden=False):
    """Batched log-odds of spoof for every element of ``ds``, in order (see `logit_parts`).

    Parameters
    ----------
    model : keras.Model
    ds : tf.data.Dataset or array_like
        Batches of model inputs, or the inputs themselves, shape (n, ...), scored in batches
        of `PREDICT_BATCH_SIZE`.
    progress : bool
        A progress bar over the batches on stderr (``total`` of them).
    with_hidden : bool
        Also return the hidden vectors the last layer reads, shape (n, units).

    Returns
    -------
    logits : np.ndarray, shape (n,), float64
        ``log(P(spoof) / P(bonafide))``; the ASVspoof score is ``-logits``.
    """
    from tqdm import tqdm

    tf, _ = load_tensorflow()

    hidden, kernel, bias = logit_parts(model)
    f = batch_function(hidden)  # one trace, the last partial batch included
    if not isinstance(ds, tf.data.Dataset):
        x = np.asarray(ds)
        ds = (x[i:i + PREDICT_BATCH_SIZE] for i in range(0, len(x), PREDICT_BATCH_SIZE))
    parts = [f(x) for x in tqdm(ds, total=total, desc="scoring", unit="batch",
                                disable=not progress)]
    h = np.concatenate(parts) if parts else np.zeros((0, kernel.shape[0]))
    z = logits_from_hidden(h, kernel, bias)
    return (z, np.asarray(h)) if with_hidden else z


# ----------------------------------------------------------------------------- files


def save_model_atomic(model, path, meta):
    """Save ``model`` as a .keras archive with ``meta`` (JSON) stored inside it, atomically."""
    with atomic_output(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(META_NAME, json.dumps(meta, indent=2))


def read_model_meta(path):
    """The metadata (feature parameters, label convention, ...) stored in a .keras file by
    `save_model_atomic`; None if it has none."""
    with zipfile.ZipFile(path) as z:
        if META_NAME not in z.namelist():
            return None
        return json.loads(z.read(META_NAME))


# ----------------------------------------------------------------------------- batch norm


def trainable_batchnorms(model):
    """The BatchNormalization layers of ``model`` (at any depth) that training updates: the
    trainable ones (a frozen EfficientNetB0's stay out)."""
    _, keras = load_tensorflow()

    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def batchnorm_statistics(model):
    """The moving mean and variance variables of `trainable_batchnorms`: what a checkpoint
    of the trained weights must keep with them (they are not trainable weights)."""
    return [v for layer in trainable_batchnorms(model)
            for v in (layer.moving_mean, layer.moving_variance)]


_BN_STEPS = weakref.WeakKeyDictionary()  # model -> its traced precise-BN forward pass


def _batchnorm_step(model, layers):
    """``model(x, training=True)`` as a ``tf.function``, traced once per model, set of
    trainable BatchNorm layers and input signature, while `recalibrate_batchnorm` holds
    momentum and dropout at 0 (constants of the trace): eager calls cost seconds per batch for
    AASIST on 2 cores."""
    tf, _ = load_tensorflow()

    key = tuple(id(layer) for layer in layers)
    if model not in _BN_STEPS or _BN_STEPS[model][0] != key:
        _BN_STEPS[model] = key, tf.function(lambda x: model(x, training=True),
                                            reduce_retracing=True)
    return _BN_STEPS[model][1]


def recalibrate_batchnorm(model, batches):
    """Replace the moving statistics of `trainable_batchnorms` by their average over
    ``batches`` (an iterable of model inputs), computed with the current weights.

    Keras keeps an exponential moving average (momentum 0.99) of the batch statistics seen in
    training; when the weights change quickly (a model trained from scratch, a few hundred
    steps) that average lags far behind, and inference-mode outputs are off while training-mode
    ones are right (measured on the quickstart's LCNN: every P(spoof) 0.81-0.85 in inference,
    0.02 vs 0.99 in training mode). This is "precise BN" (Wu & Johnson, "Rethinking 'batch' in
    BatchNorm", 2021): a forward pass in training mode per batch, with momentum 0 so that the
    moving statistics become that batch's, averaged over the batches (in float64) and then
    assigned: the plain mean of the batch statistics. Dropout is off during that pass, so the
    statistics are those of the activations inference sees (dropout before a BatchNorm shifts
    its variance otherwise), and the pass is deterministic. The pass runs as a traced graph
    (`_batchnorm_step`, momentum and dropout rate are constants of the trace). Weights and the
    layers' random state are left as they were.
    """
    _, keras = load_tensorflow()

    layers = trainable_batchnorms(model)
    if not layers:
        return 0
    dropouts = [layer for layer in model._flatten_layers(include_self=False)
                if isinstance(layer, keras.layers.Dropout)]
    seeds = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    stats = batchnorm_statistics(model)
    saved = [layer.momentum for layer in layers], [d.rate for d in dropouts], \
        [v.numpy() for v in seeds], [v.numpy() for v in stats]
    n, total, means = 0, None, saved[3]  # an error or no batch leaves the statistics as they were
    try:
        for d in dropouts:
            d.rate = 0.0
        for layer in layers:
            layer.momentum = 0.0
        step = _batchnorm_step(model, layers)
        for n, x in enumerate(batches, 1):
            step(x)
            values = [v.numpy().astype(np.float64) for v in stats]
            total = values if total is None else [t + v for t, v in zip(total, values)]
        if total is not None:
            means = [(t / n).astype(value.dtype) for t, value in zip(total, saved[3])]
    finally:
        for layer, m in zip(layers, saved[0]):
            layer.momentum = m
        for d, rate in zip(dropouts, saved[1]):
            d.rate = rate
        for v, value in zip(seeds, saved[2]):
            v.assign(value)
        for v, value in zip(stats, means):
            v.assign(value)
    return n
