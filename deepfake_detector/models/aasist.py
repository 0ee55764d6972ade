"""``--model aasist``: AASIST, the field's reference countermeasure, written anew in Keras 3.

Jung et al., "AASIST: Audio anti-spoofing using integrated spectro-temporal graph attention
networks", ICASSP 2022. On the raw 16 kHz waveform (64,600 samples, about 4 s):

1. a sinc front end: 70 fixed band-pass filters of 129 taps (mel-spaced cut-offs, Hamming
   window; RawNet2's), |x|, 3x3 max-pooling, batch norm, SELU;
2. a residual encoder: six blocks of two (2, 3) convolutions (over frequency x time) with
   batch norm and SELU, 1x3 max-pooling along time after each;
3. a spectral and a temporal graph (maximum of |e| over time, resp. frequency), each through a
   graph attention layer and a graph pooling (top-k nodes);
4. two branches of heterogeneous stacking graph attention (temporal and spectral nodes plus a
   learnable master node), the element-wise maximum of the two;
5. the readout: max |.| and mean of the temporal and spectral nodes and the master node (5 x
   ``gat_dims[1]`` values) -> dropout -> the output layer.

The official model ends in two logits (spoof, bonafide). Here, like every family of the project,
it ends in ``p_spoof`` = Dense(1, sigmoid) = P(spoof): the official softmax over the two logits
gives exactly ``P(spoof) = sigmoid(logit_spoof - logit_bonafide)``, so importing a checkpoint
(`deepfake_detector.weights.checkpoints.load_state_dict`) sets ``p_spoof``'s kernel and bias to the
differences of the two rows, and the project's score ``-logit = logit_bonafide - logit_spoof``.

Layout: tensors are channels-last and time-major, (batch, time, frequency, channels), so the
4-D encoder runs on TensorFlow's oneDNN kernels without transposing the large early maps; the
official (out, in, freq, time) kernels are transposed on import. One detail of the official
code is kept as it computes: a residual block's ``conv1`` reads the block input, so its
``bn1`` and SELU have no effect; the port leaves them out and import ignores their weights.
"""

import numpy as np

from .common import KERAS_PACKAGE, load_tensorflow

# -----------------------------------------------------------------------------
SAMPLES = 64_600  # the official input: the first 64,600 samples (~4 s), tiled when shorter
# the official model_config of each published checkpoint (clovaai/aasist config/*.conf)
CONFIGS = {
    "AASIST": {"nb_samp": SAMPLES, "first_conv": 128,
               "filts": [70, [1, 32], [32, 32], [32, 64], [64, 64]], "gat_dims": [64, 32],
               "pool_ratios": [0.5, 0.7, 0.5, 0.5], "temperatures": [2.0, 2.0, 100.0, 100.0]},
    "AASIST-L": {"nb_samp": SAMPLES, "first_conv": 128,
                 "filts": [70, [1, 32], [32, 32], [32, 24], [24, 24]], "gat_dims": [24, 32],
                 "pool_ratios": [0.4, 0.5, 0.7, 0.5],
                 "temperatures": [2.0, 2.0, 100.0, 100.0]},
}
BN_EPSILON, BN_MOMENTUM = 1e-5, 0.9  # PyTorch's BatchNorm defaults (its momentum 0.1)
DROPOUT = 0.5  # before the output layer (official)
# batches sized by memory on a CPU: scoring is as fast per utterance at 1, 2, 4 or 8 windows
# (AASIST 7.9-8.2, AASIST-L 9.0-9.4 utterances/s on 2 cores) while each window of a batch holds
# about 0.19 GB (AASIST-L) of feature maps: predict.py peaks at 1.2 GB at batch 2 against 2.2 GB
# at 8 (benchmarks/memory.py), and a short upload waits for at most 2 windows of a long one;
# a training step at 8 holds about 5.6 GB (the official batch of 24 would need about 3x that)
PREDICT_BATCH, TRAIN_BATCH = 2, 8
# the family (see deepfake_detector.models.FAMILIES): waveform arrays of the official length;
# trained end to end; defaults of the official recipe (Adam 1e-4, weight decay 1e-4, cosine
# decay) with the batch a CPU's memory affords and the epochs its time affords
SPEC = {"features": "waveform", "input": "waveform", "channels": None, "frozen_backbone": False,
        "clip_samples": SAMPLES, "predict_batch_size": PREDICT_BATCH,
        "defaults": {"weights": None, "epochs": 10, "batch_size": TRAIN_BATCH,
                     "learning_rate": 1e-4, "lr_schedule": "cosine", "weight_decay": 1e-4,
                     "dense_units": None, "dropout": DROPOUT, "preset": "AASIST"}}
# -----------------------------------------------------------------------------


def sinc_filters(out_channels=70, kernel_size=128, sample_rate=16000):
    """The fixed band-pass filters of the sinc front end (RawNet2/AASIST ``CONV``).

    Cut-offs equally spaced on the mel scale (``2595 log10(1 + f / 700)``) between 0 Hz and
    Nyquist over a 512-point FFT grid; each filter is the difference of two ideal low-pass sinc
    filters, Hamming-windowed. An even ``kernel_size`` becomes odd (symmetric filters). The time
    support is float32 as in the official code, so the filters agree with its to float32
    rounding.

    Returns
    -------
    filters : np.ndarray, shape (kernel_size (odd), 1, out_channels), float32
        A Conv1D kernel.
    """
    k = kernel_size + 1 if kernel_size % 2 == 0 else kernel_size
    f = int(sample_rate / 2) * np.linspace(0, 1, 512 // 2 + 1)
    fmel = 2595 * np.log10(1 + f / 700)
    edges_mel = np.linspace(fmel.min(), fmel.max(), out_channels + 1)
    edges = 700 * (10 ** (edges_mel / 2595) - 1)
    t = np.arange(-(k - 1) / 2, (k - 1) / 2 + 1, dtype=np.float32)
    window = np.hamming(k)
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        high = (2 * hi / sample_rate) * np.sinc((np.float32(2 * hi) * t / sample_rate)
                                                .astype(np.float32))
        low = (2 * lo / sample_rate) * np.sinc((np.float32(2 * lo) * t / sample_rate)
                                               .astype(np.float32))
        bands.append((window * (high - low)).astype(np.float32))
    return np.stack(bands, axis=1)[:, None, :]


_CUSTOM = {}


def custom_layers():
    """The family's Keras layers, defined and registered on first use: ``SincFilters``,
    ``Abs``, ``GraphAttention``, ``HeteroGraphAttention``, ``GraphPool`` and ``AasistGraph``."""
    if not _CUSTOM:
        _CUSTOM.update(_define_layers())
    return _CUSTOM


def _dense(units, name):
    from keras import layers

    return layers.Dense(units, name=name)


def _bn(name):
    from keras import layers

    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _pairs(x):
    """(batch, n, d) -> (batch, n, n, d): the element-wise products of every pair of nodes."""
    return x[:, :, None, :] * x[:, None, :, :]


def _define_layers():
    """Define and register every layer class of the family (`custom_layers`)."""
    _, keras = load_tensorflow()

    register = keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
    found = _front_layers(keras, register)
    for define in (_graph_attention, _hetero_attention, _graph_pool, _aasist_graph):
        found.update(define(keras, register, found))
    return found


def _front_layers(keras, register):
    """``SincFilters`` and ``Abs``."""
    from keras import layers, ops

    @register
    class SincFilters(layers.Layer):
        """The fixed sinc band-pass filter bank (`sinc_filters`), no bias, 'valid' padding:
        (batch, samples, 1) -> (batch, samples - kernel + 1, out_channels)."""

        def __init__(self, out_channels=70, kernel_size=128, sample_rate=16000, **kwargs):
            super().__init__(**kwargs)
            self.out_channels, self.kernel_size = out_channels, kernel_size
            self.sample_rate = sample_rate

        def build(self, input_shape):
            value = sinc_filters(self.out_channels, self.kernel_size, self.sample_rate)
            self.band_pass = self.add_weight(shape=value.shape, initializer="zeros",
                                             trainable=False, name="band_pass")
            self.band_pass.assign(value)

        def call(self, x):
            return ops.conv(x, ops.cast(self.band_pass, x.dtype), strides=1, padding="valid")

        def compute_output_shape(self, input_shape):
            k = self.kernel_size + 1 - self.kernel_size % 2
            n = None if input_shape[1] is None else input_shape[1] - k + 1
            return (input_shape[0], n, self.out_channels)

        def get_config(self):
            return {**super().get_config(), "out_channels": self.out_channels,
                    "kernel_size": self.kernel_size, "sample_rate": self.sample_rate}

    @register
    class Abs(layers.Layer):
        """Element-wise absolute value."""

        def call(self, x):
            return ops.abs(x)

    return {"SincFilters": SincFilters, "Abs": Abs}


def _graph_attention(keras, register, found):
    """``GraphAttention``."""
    from keras import layers, ops

    @register
    class GraphAttention(layers.Layer):
        """Graph attention over all node pairs (AASIST's ``GraphAttentionLayer``): input dropout
        0.2; attention ``softmax_j(tanh(W_a (x_i * x_j)) . w / temperature)``; output
        ``W_1 (att x) + W_2 x`` -> batch norm -> SELU. (batch, n, in) -> (batch, n, out_dim)."""

        def __init__(self, out_dim, temperature=1.0, **kwargs):
            super().__init__(**kwargs)
            self.out_dim, self.temperature = out_dim, temperature
            self.att_proj = _dense(out_dim, "att_proj")
            self.proj_with_att = _dense(out_dim, "proj_with_att")
            self.proj_without_att = _dense(out_dim, "proj_without_att")
            self.bn = _bn("bn")
            self.input_drop = layers.Dropout(0.2)

        def build(self, input_shape):
            d = input_shape[-1]
            self.att_proj.build((None, None, None, d))
            self.proj_with_att.build((None, None, d))
            self.proj_without_att.build((None, None, d))
            self.bn.build((None, None, self.out_dim))
            self.att_weight = self.add_weight(shape=(self.out_dim, 1),
                                              initializer="glorot_normal", name="att_weight")

        def call(self, x, training=None):
            x = self.input_drop(x, training=training)
            att = ops.matmul(ops.tanh(self.att_proj(_pairs(x))), self.att_weight)[..., 0]
            att = ops.softmax(att / self.temperature, axis=-1)
            x = self.proj_with_att(ops.matmul(att, x)) + self.proj_without_att(x)
            return ops.selu(self.bn(x, training=training))

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], self.out_dim)

        def get_config(self):
            return {**super().get_config(), "out_dim": self.out_dim,
                    "temperature": self.temperature}

    return {"GraphAttention": GraphAttention}


def _hetero_attention(keras, register, found):
    """``HeteroGraphAttention``."""
    from keras import layers, ops

    @register
    class HeteroGraphAttention(layers.Layer):
        """Heterogeneous stacking graph attention (``HtrgGraphAttentionLayer``): two node types
        projected to one space, attention weights per type pair (11, 22, and 12 for both cross
        blocks), and a master node updated by attention over all nodes.
        ``(x1 (batch, n1, in), x2 (batch, n2, in), master (1 or batch, 1, in))`` ->
        ``(x1', x2', master')`` with ``out_dim`` features."""

        def __init__(self, out_dim, temperature=1.0, **kwargs):
            super().__init__(**kwargs)
            self.out_dim, self.temperature = out_dim, temperature
            self.input_drop = layers.Dropout(0.2)
            self.bn = _bn("bn")

        def build(self, input_shape):
            d = input_shape[-1]
            for name, units, rank in (("proj_type1", d, 3), ("proj_type2", d, 3),
                                      ("att_proj", self.out_dim, 4),
                                      ("att_projM", self.out_dim, 3),
                                      ("proj_with_att", self.out_dim, 3),
                                      ("proj_without_att", self.out_dim, 3),
                                      ("proj_with_attM", self.out_dim, 3),
                                      ("proj_without_attM", self.out_dim, 3)):
                layer = _dense(units, name)
                layer.build((*([None] * (rank - 1)), d))
                setattr(self, name, layer)
            self.bn.build((None, None, self.out_dim))
            for name in ("att_weight11", "att_weight22", "att_weight12", "att_weightM"):
                setattr(self, name, self.add_weight(shape=(self.out_dim, 1),
                                                    initializer="glorot_normal", name=name))

        def call(self, x1, x2, master, training=None):
            n1, n2 = x1.shape[1], x2.shape[1]
            x = ops.concatenate([self.proj_type1(x1), self.proj_type2(x2)], axis=1)
            x = self.input_drop(x, training=training)
            scores = ops.matmul(ops.tanh(self.att_proj(_pairs(x))), ops.concatenate(
                [self.att_weight11, self.att_weight22, self.att_weight12], axis=1))
            kind = np.r_[np.zeros(n1, bool), np.ones(n2, bool)]
            same1 = ~kind[:, None] & ~kind[None, :]
            same2 = kind[:, None] & kind[None, :]
            att = ops.where(same1, scores[..., 0], ops.where(same2, scores[..., 1],
                                                              scores[..., 2]))
            att = ops.softmax(att / self.temperature, axis=-1)
            m = ops.matmul(ops.tanh(self.att_projM(x * master)), self.att_weightM)
            m = ops.softmax(m / self.temperature, axis=1)  # (batch, n, 1), over the nodes
            master = (self.proj_with_attM(ops.matmul(ops.transpose(m, (0, 2, 1)), x))
                      + self.proj_without_attM(master))
            x = self.proj_with_att(ops.matmul(att, x)) + self.proj_without_att(x)
            x = ops.selu(self.bn(x, training=training))
            return x[:, :n1], x[:, n1:], master

        def get_config(self):
            return {**super().get_config(), "out_dim": self.out_dim,
                    "temperature": self.temperature}

    return {"HeteroGraphAttention": HeteroGraphAttention}


def _graph_pool(keras, register, found):
    """``GraphPool``."""
    tf, _ = load_tensorflow()
    from keras import layers, ops

    @register
    class GraphPool(layers.Layer):
        """Graph pooling (``GraphPool``): score each node ``sigmoid(w . dropout(h))``, keep
        the ``max(int(n * ratio), 1)`` best-scored nodes, each multiplied by its score."""

        def __init__(self, ratio, dropout=0.3, **kwargs):
            super().__init__(**kwargs)
            self.ratio, self.dropout = ratio, dropout
            self.proj = _dense(1, "proj")
            self.drop = layers.Dropout(dropout)

        def build(self, input_shape):
            self.proj.build((None, None, input_shape[-1]))

        def call(self, h, training=None):
            k = max(int(h.shape[1] * self.ratio), 1)
            scores = ops.sigmoid(self.proj(self.drop(h, training=training)))
            index = tf.math.top_k(scores[..., 0], k=k).indices
            return tf.gather(h * scores, index, batch_dims=1)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], max(int(input_shape[1] * self.ratio), 1), input_shape[2])

        def get_config(self):
            return {**super().get_config(), "ratio": self.ratio, "dropout": self.dropout}

    return {"GraphPool": GraphPool}


def _aasist_graph(keras, register, found):
    """``AasistGraph``, built of ``found``'s attention and pooling layers."""
    from keras import layers, ops

    GraphAttention, GraphPool = found["GraphAttention"], found["GraphPool"]
    HeteroGraphAttention = found["HeteroGraphAttention"]

    @register
    class AasistGraph(layers.Layer):
        """Everything between the encoder and the output layer: the spectral and temporal
        graphs, the two heterogeneous branches with their master nodes, their maximum and
        the readout. (batch, time, freq, channels) -> (batch, 5 * gat_dims[1])."""

        def __init__(self, gat_dims, pool_ratios, temperatures, **kwargs):
            super().__init__(**kwargs)
            self.gat_dims, self.pool_ratios = list(gat_dims), list(pool_ratios)
            self.temperatures = list(temperatures)
            g0, g1 = self.gat_dims
            t, r = self.temperatures, self.pool_ratios
            self.GAT_layer_S = GraphAttention(g0, t[0], name="GAT_layer_S")
            self.GAT_layer_T = GraphAttention(g0, t[1], name="GAT_layer_T")
            for name in ("ST11", "ST12", "ST21", "ST22"):
                setattr(self, f"HtrgGAT_layer_{name}",
                        HeteroGraphAttention(g1, t[2], name=f"HtrgGAT_layer_{name}"))
            self.pool_S = GraphPool(r[0], name="pool_S")
            self.pool_T = GraphPool(r[1], name="pool_T")
            for name in ("pool_hS1", "pool_hT1", "pool_hS2", "pool_hT2"):
                setattr(self, name, GraphPool(r[2], name=name))
            self.drop_way = layers.Dropout(0.2)

        def build(self, input_shape):
            _, frames, bins, channels = input_shape
            g0, g1 = self.gat_dims
            self.pos_S = self.add_weight(shape=(1, bins, channels), name="pos_S")
            self.master1 = self.add_weight(shape=(1, 1, g0), name="master1")
            self.master2 = self.add_weight(shape=(1, 1, g0), name="master2")
            self.GAT_layer_S.build((None, bins, channels))
            self.GAT_layer_T.build((None, frames, channels))
            for name, width in (("ST11", g0), ("ST12", g1), ("ST21", g0), ("ST22", g1)):
                getattr(self, f"HtrgGAT_layer_{name}").build((None, None, width))
            for name, width in (("pool_S", g0), ("pool_T", g0), ("pool_hS1", g1),
                                ("pool_hT1", g1), ("pool_hS2", g1), ("pool_hT2", g1)):
                getattr(self, name).build((None, None, width))

        def _branch(self, first, second, pool_s, pool_t, out_t, out_s, master, training):
            t1, s1, m1 = first(out_t, out_s, master, training=training)
            s1, t1 = pool_s(s1, training=training), pool_t(t1, training=training)
            ta, sa, ma = second(t1, s1, m1, training=training)
            return t1 + ta, s1 + sa, m1 + ma

        def call(self, e, training=None):
            e = ops.abs(e)
            out_s = self.pool_S(self.GAT_layer_S(ops.max(e, axis=1) + self.pos_S,
                                                 training=training), training=training)
            out_t = self.pool_T(self.GAT_layer_T(ops.max(e, axis=2), training=training),
                                training=training)
            b1 = self._branch(self.HtrgGAT_layer_ST11, self.HtrgGAT_layer_ST12, self.pool_hS1,
                              self.pool_hT1, out_t, out_s, self.master1, training)
            b2 = self._branch(self.HtrgGAT_layer_ST21, self.HtrgGAT_layer_ST22, self.pool_hS2,
                              self.pool_hT2, out_t, out_s, self.master2, training)
            t, s, m = (ops.maximum(self.drop_way(a, training=training),
                                   self.drop_way(b, training=training)) for a, b in zip(b1, b2))
            return ops.concatenate([ops.max(ops.abs(t), axis=1), ops.mean(t, axis=1),
                                    ops.max(ops.abs(s), axis=1), ops.mean(s, axis=1),
                                    m[:, 0, :]], axis=-1)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], 5 * self.gat_dims[1])

        def get_config(self):
            return {**super().get_config(), "gat_dims": self.gat_dims,
                    "pool_ratios": self.pool_ratios, "temperatures": self.temperatures}

    return {"AasistGraph": AasistGraph}


def residual_block(x, filters, name):
    """One official residual block in (batch, time, freq, channels) layout: ``conv1`` (2, 3)
    with padding (1, 1) -> batch norm -> SELU -> ``conv2`` (2, 3) with padding (0, 1); plus the
    input (through a (1, 3) convolution when the channel count changes); max-pooling (1, 3) along
    time. Kernels are (time, freq) here: the official (freq, time) ones transposed."""
    from keras import layers

    n_in, n_out = filters
    y = layers.ZeroPadding2D(((1, 1), (1, 1)), name=f"{name}_pad1")(x)
    y = layers.Conv2D(n_out, (3, 2), name=f"{name}_conv1")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
    y = layers.Activation("selu", name=f"{name}_selu")(y)
    y = layers.ZeroPadding2D(((1, 1), (0, 0)), name=f"{name}_pad2")(y)
    y = layers.Conv2D(n_out, (3, 2), name=f"{name}_conv2")(y)
    if n_in != n_out:
        x = layers.ZeroPadding2D(((1, 1), (0, 0)), name=f"{name}_padd")(x)
        x = layers.Conv2D(n_out, (3, 1), name=f"{name}_conv_downsample")(x)
    y = layers.Add(name=f"{name}_add")([y, x])
    return layers.MaxPooling2D((3, 1), name=f"{name}_pool")(y)


def build_aasist(config="AASIST", input_shape=(SAMPLES,), dropout=DROPOUT):
    """AASIST, uncompiled.

    Parameters
    ----------
    config : str or dict
        ``"AASIST"``, ``"AASIST-L"`` (`CONFIGS`) or an official ``model_config`` dict (keys
        ``first_conv``, ``filts``, ``gat_dims``, ``pool_ratios``, ``temperatures``).
    input_shape : tuple
        (samples,): waveform windows, floats in [-1, 1) (`datasets.to_model_input`
        ``"waveform"``); the official checkpoints were trained on 64,600.
    dropout : float
        Before the output layer.

    Returns
    -------
    model : keras.Model
        Input (batch, 64600) -> (batch, 1) = P(spoof); 297,193 trainable weights for AASIST,
        84,873 for AASIST-L (the official counts, 297,866 and 85,306, also hold the unused
        ``bn1`` layers and a second output row), plus the fixed sinc filters.
    """
    _, keras = load_tensorflow()
    from keras import layers

    cfg = resolve_config(config)
    custom = custom_layers()
    filts = cfg["filts"]
    inputs = keras.Input(shape=input_shape, name="waveform")
    x = layers.Reshape((input_shape[0], 1), name="to_channels")(inputs)
    x = custom["SincFilters"](filts[0], cfg["first_conv"], name="conv_time")(x)
    x = layers.Reshape((x.shape[1], filts[0], 1), name="to_time_freq")(x)
    x = custom["Abs"](name="abs")(x)
    x = layers.MaxPooling2D((3, 3), name="first_pool")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="first_bn")(x)
    x = layers.Activation("selu", name="first_selu")(x)
    for i, f in enumerate([filts[1], filts[2], filts[3], filts[4], filts[4], filts[4]]):
        x = residual_block(x, f, f"encoder{i}")
    x = custom["AasistGraph"](cfg["gat_dims"], cfg["pool_ratios"], cfg["temperatures"],
                              name="graph")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_spoof")(x)
    return keras.Model(inputs, outputs, name="aasist_deepfake_detector")


def resolve_config(config):
    """A model_config dict from a name of `CONFIGS` or a dict (checked)."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown AASIST configuration {config!r}; expected one of "
                             f"{', '.join(CONFIGS)} or an official model_config")
        return CONFIGS[config]
    need = {"first_conv", "filts", "gat_dims", "pool_ratios", "temperatures"}
    if not isinstance(config, dict) or not need <= set(config):
        raise ValueError(f"an AASIST model_config needs the keys {', '.join(sorted(need))}")
    return config


ARCHITECTURE_KEYS = ("first_conv", "filts", "gat_dims", "pool_ratios", "temperatures")


def same_architecture(a, b):
    """Whether two model_configs describe the same network (`ARCHITECTURE_KEYS`)."""
    return all(a.get(k) == b.get(k) for k in ARCHITECTURE_KEYS)


def build(input_shape, dense_units=None, dropout=DROPOUT, preset="AASIST",
          freeze_encoder=False):
    """The family's model, uncompiled (`build_aasist`): ``preset`` names the configuration
    (``--preset AASIST`` or ``AASIST-L``); AASIST has no dense head to size. With
    ``freeze_encoder``, `freeze_encoder_layers`."""
    model = build_aasist(preset, input_shape, dropout)
    return freeze_encoder_layers(model) if freeze_encoder else model


def freeze_encoder_layers(model):
    """Freeze everything before the graph attention back end (the sinc front end, the first
    BatchNorm and the six residual blocks, whose BatchNorm layers then run in inference mode):
    only ``graph`` and ``p_spoof`` train (``train.py --freeze-encoder``; its features are
    cached like a frozen backbone's). Returns ``model``."""
    graph = model.get_layer("graph")
    for layer in model.layers[:model.layers.index(graph)]:
        layer.trainable = False
    return model
