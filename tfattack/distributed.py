"""Data-parallel attacks over several devices with `tf.distribute.MirroredStrategy`.

The batch is split evenly over the replicas (padded with copies of its last image when it does not
divide); each replica runs the whole compiled attack loop on its share, with the models' variables
mirrored and a `tf.random.Generator` created in the strategy's scope (each replica draws its own
stream). Results are gathered back in input order.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import tensorflow as tf


def make_strategy(devices: Optional[List[str]] = None) -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy over `devices` (default: every GPU, else the CPU)."""
    return tf.distribute.MirroredStrategy(devices)


def use_logical_cpus(count: int) -> None:
    """Splits the CPU into `count` logical devices (to exercise the mirrored path without GPUs).

    Must run before TensorFlow initialises its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


class MirroredAttack:
    """`MirroredAttack(attack, strategy)(model, images, labels, target=None)`: same contract as `attack`.

    Build (load) the models inside `strategy.scope()` so that their variables are mirrored.
    """

    def __init__(self, attack, strategy: tf.distribute.Strategy):
        self.attack = attack
        self.strategy = strategy
        self.config = attack.config
        with strategy.scope():
            self._generator = tf.random.Generator.from_seed(attack.config.seed)
        self._compiled = {}

    def _compiled_for(self, model, targeted: bool):
        key = (id(model), targeted)
        if key not in self._compiled:
            loop = self.attack.graph_function(model)
            generator, strategy = self._generator, self.strategy

            @tf.function
            def distributed(clean, labels, targets):
                return strategy.run(loop, args=(clean, labels, targets, generator, targeted))

            self._compiled[key] = (model, distributed)
        return self._compiled[key][1]

    def _distribute(self, array: np.ndarray):
        parts = np.split(array, self.strategy.num_replicas_in_sync)
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(parts[context.replica_id_in_sync_group]))

    def __call__(self, model, images, labels, target=None, seed=None):
        from tfattack.attacks.loop import check_model

        check_model(model)
        images = np.asarray(images, np.float32)
        labels = np.asarray(labels).astype(np.int32)
        targets = labels if target is None else np.asarray(target).astype(np.int32)
        count, replicas = len(images), self.strategy.num_replicas_in_sync
        padded = -count % replicas
        if padded:
            images, labels, targets = (np.concatenate([a, np.repeat(a[-1:], padded, axis=0)])
                                       for a in (images, labels, targets))
        self._generator.reset_from_seed(self.config.seed if seed is None else int(seed))
        run = self._compiled_for(model, target is not None)
        per_replica = run(self._distribute(images), self._distribute(labels), self._distribute(targets))
        return self.strategy.gather(per_replica, axis=0)[:count]
