"""Input pipelines: TFDS loading and tf.data augmentations."""
