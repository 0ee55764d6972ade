"""Which examples each training epoch reads, in which order, with which augmentation seeds.

Every draw is a function of (seed, epoch number) alone (`epoch_order`, `example_seeds`), never
of a random state that lives in one process: a run resumed after a crash reads, from the
epoch it resumes on, exactly the batches the uninterrupted run read. `epoch_batches` turns
that into a ``tf.data`` pipeline (`datasets.make_dataset` for arrays on disk,
`feature_cache.feature_dataset` for cached backbone features: both read the same batches).
"""

import numpy as np

from .models.common import load_tensorflow

SEED = 42


def _epoch_rng(seed, epoch, stream):
    """The generator of one epoch's draws: a pure function of (seed, epoch, stream), so that a
    run resumed in a new process draws what the uninterrupted run drew."""
    return np.random.default_rng([int(seed) % 2**64, int(epoch) % 2**64, stream])


def balanced_order(targets, batch_size, rng):
    """One epoch of indices drawn so that every batch is half bonafide, half spoof.

    Each class is reshuffled every time it is used up and the classes alternate, so a batch of
    even size holds exactly ``batch_size / 2`` of each (odd sizes alternate between one more of
    either). The minority class is oversampled, the majority subsampled within an epoch.

    Parameters
    ----------
    targets : array of {0, 1}, shape (n,)
    batch_size : int
    rng : numpy.random.Generator

    Returns
    -------
    order : ndarray of int64, shape (ceil(n / batch_size) * batch_size,): as many batches as
        without balancing
    """
    t = np.asarray(targets).astype(int)
    groups = [np.flatnonzero(t == c) for c in (0, 1)]
    if min(len(g) for g in groups) == 0:
        raise ValueError(f"balanced batches need both classes, got {len(groups[0])} bonafide "
                         f"and {len(groups[1])} spoof")
    total = -(-len(t) // batch_size) * batch_size
    order = np.empty(total, np.int64)
    for c, g in enumerate(groups):  # 0, 1, 0, 1, ...
        need = len(range(c, total, 2))
        passes = [rng.permutation(g) for _ in range(-(-need // len(g)))]
        order[c::2] = np.concatenate(passes)[:need]
    return order


def epoch_order(targets, batch_size, epoch, seed=SEED, shuffle=True, balanced=False):
    """The indices one training epoch reads, in order: ``range(n)``, a permutation, or
    balanced batches (`balanced_order`), drawn from (``seed``, ``epoch``) alone.

    Parameters
    ----------
    targets : array of {0, 1}, shape (n,)
    batch_size : int
    epoch : int
        The epoch's number from the run's start (or any key: the same key, the same order).
    seed : int
    shuffle, balanced : bool

    Returns
    -------
    order : ndarray of int64, shape (n,) (``(ceil(n / batch_size) * batch_size,)`` balanced)
    """
    rng = _epoch_rng(seed, epoch, 0)
    if balanced:
        return balanced_order(targets, batch_size, rng)
    n = len(targets)
    return rng.permutation(n).astype(np.int64) if shuffle else np.arange(n, dtype=np.int64)


def example_seeds(n, epoch, seed=SEED):
    """One seed per example of an epoch for its augmentation draws: shape (n,) int64, from
    (``seed``, ``epoch``) alone, independent of the epoch's order."""
    return _epoch_rng(seed, epoch, 1).integers(0, 2**63 - 1, size=n, dtype=np.int64)


class EpochClock:
    """The epoch number a training dataset draws its next epoch from (`epoch_batches`).

    Each iteration of the dataset takes the clock's value and moves it on by one, so iterating
    it again gives the next epoch's draw (0, 1, 2, ... from a new clock). ``callback()`` is a
    Keras callback that sets the clock to the epoch ``fit`` is about to run, so that a run
    resumed at epoch 5 in a new process draws epoch 5's batches, as the uninterrupted run did.
    ``fit`` starts each epoch's iteration after ``on_epoch_begin`` (a finite dataset without
    ``steps_per_epoch``).

    Parameters
    ----------
    start : int
        The first epoch's number.
    """

    def __init__(self, start=0):
        self.epoch = int(start)

    def take(self):
        """The epoch to draw now; the clock moves on to the next."""
        epoch, self.epoch = self.epoch, self.epoch + 1
        return epoch

    def callback(self):
        """A Keras callback setting the clock to each epoch ``fit`` begins."""
        _, keras = load_tensorflow()
        clock = self

        class SetEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock.epoch = int(epoch)

        return SetEpoch()


def without_autotune(ds):
    """``ds`` with tf.data's autotuner off (`epoch_batches`, `feature_cache`: every pipeline of
    the project).

    The autotuner's background thread can hold the end of an iterator for 10 s: scoring 2,000
    arrays ended 10.0 s late in 2 of 8 runs with it, in none of 16 without it, at the same
    speed otherwise (docs/speed.md, "Where users wait"). Keras starts a new iterator every
    epoch and every validation pass. Maps keep their ``AUTOTUNE`` parallelism, which without
    the autotuner is the number of cores.

    Parameters
    ----------
    ds : tf.data.Dataset

    Returns
    -------
    ds : tf.data.Dataset
        The same elements.
    """
    tf, _ = load_tensorflow()

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def epoch_batches(targets, batch_size, load, shuffle=False, seed=SEED, balanced=False,
                  clock=None, draws=False):
    """Batches of ``load(i)`` (``load(i, seed)`` with ``draws``) over a part, epoch by epoch.

    Every epoch's order and augmentation seeds are a function of (``seed``, epoch number)
    (`epoch_order`, `example_seeds`), never of a random state that lives in one process: with
    ``clock.callback()`` among ``fit``'s callbacks, a run that resumes at epoch 5 after a crash
    reads exactly the batches the uninterrupted run read.

    Parameters
    ----------
    targets : array of {0, 1}, shape (n,)
    batch_size : int
    load : callable
        Maps an int64 index (and, with ``draws``, an int64 seed) to one element.
    shuffle, balanced : bool
        As in `epoch_order`; neither (and no ``draws``): ``range(n)`` every time.
    seed : int
    clock : EpochClock, optional
        Where each iteration takes its epoch number; default a new clock at 0.
    draws : bool
        Pass each example its seed (`example_seeds`) for augmentation.

    Returns
    -------
    ds : tf.data.Dataset
        Batches of ``load``'s elements, one epoch per iteration.
    """
    tf, _ = load_tensorflow()

    t = np.asarray(targets)
    if not (shuffle or balanced or draws):
        return without_autotune(tf.data.Dataset.range(len(t)).map(
            load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size))
    clock = EpochClock() if clock is None else clock

    def draw():
        epoch = clock.take()
        order = epoch_order(t, batch_size, epoch, seed, shuffle, balanced)
        return order, example_seeds(len(order), epoch, seed)

    def one_epoch(_):
        order, seeds = tf.numpy_function(draw, [], (tf.int64, tf.int64), stateful=True)
        ds = tf.data.Dataset.from_tensor_slices((tf.ensure_shape(order, [None]),
                                                 tf.ensure_shape(seeds, [None])))
        ds = ds if draws else ds.map(lambda i, _: i)
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True).batch(batch_size)

    n_batches = -(-len(t) // batch_size)  # as many balanced batches as without balancing
    # a known length: Keras shows progress and ends the epoch without an "out of data" warning
    return without_autotune(tf.data.Dataset.range(1).flat_map(one_epoch).apply(
        tf.data.experimental.assert_cardinality(n_batches)))


def balanced_indices(targets, batch_size, seed=SEED):
    """Indices of balanced batches (`balanced_order`), the next epoch each time the dataset is
    iterated (`epoch_batches`).

    Returns
    -------
    ds : tf.data.Dataset of int64 indices, ``ceil(n / batch_size) * batch_size`` per iteration
    """
    epoch_order(targets, batch_size, 0, seed, balanced=True)  # fail here on a single class
    return epoch_batches(targets, batch_size, lambda i: i, seed=seed, balanced=True).unbatch()
