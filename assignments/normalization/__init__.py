"""The course's normalization lesson: seven steps of batch, layer, instance and group norm."""
