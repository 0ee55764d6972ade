"""tf.distribute strategies for train.py (``--strategy``, ``--cpu-devices``)."""

from ..models import load_tensorflow

MULTIWORKER_BLOCKED = (
    "--strategy multiworker is not available: Keras 3's Model.fit fails under "
    "tf.distribute.MultiWorkerMirroredStrategy ('Attempt to convert a value (PerReplica...)'; "
    "upstream keras-team/keras#20585, tensorflow/tensorflow#72388; reproduced here with "
    "TensorFlow {tf} / Keras {keras} and two workers on localhost). Use --strategy mirrored "
    "for several GPUs of one host.")
STRATEGIES = ("none", "mirrored", "multiworker")


def configure_cpu_devices(n):
    """Split the CPU into ``n`` logical devices (to exercise distribution strategies without
    accelerators). Must run before TensorFlow initializes its devices."""
    tf, _ = load_tensorflow()

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def get_strategy(name="none"):
    """A ``tf.distribute`` strategy by name.

    Parameters
    ----------
    name : {"none", "mirrored", "multiworker"}
        ``mirrored``: synchronous data parallelism over this host's GPUs (or its logical CPUs
        when there is no GPU, see `configure_cpu_devices`). The batch size is the global batch,
        split across replicas. ``multiworker`` (several hosts via ``TF_CONFIG``) raises
        ValueError: Keras 3's ``fit`` does not run under it (see `MULTIWORKER_BLOCKED`).
    """
    tf, keras = load_tensorflow()

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if name == "multiworker":
        raise ValueError(MULTIWORKER_BLOCKED.format(tf=tf.__version__, keras=keras.__version__))
    raise ValueError(f"unknown strategy {name!r}; expected none, mirrored or multiworker")


def trim_to_replicas(df, replicas):
    """The first rows of ``df`` in a multiple of ``replicas`` (at most replicas - 1 dropped).

    Keras 3 fails on a batch that splits unevenly across replicas: with a batch size that is a
    multiple of the replicas, trimming each part to a multiple of them makes every batch, the
    last included, split evenly.
    """
    return df.iloc[:len(df) - len(df) % replicas]
