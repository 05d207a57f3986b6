"""The course scaffold for the Conv2d assignment, as the course notebook defines it.

The grader runs this module's source first in every submission's namespace, so a
submission that relies on the scaffold (and does not paste it) still loads; the
student's own definitions, run afterwards, win.
"""
from abc import ABC, abstractmethod

import torch


def calc_out_shape(input_matrix_shape, out_channels, kernel_size, stride, padding, dilation=1):
    batch_size, channels_count, input_height, input_width = input_matrix_shape
    output_height = (input_height + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    output_width = (input_width + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    return batch_size, out_channels, output_height, output_width


def get_padding2d(input_images, pad):
    """Zero-pads the last two dimensions of a (batch, channels, height, width) tensor by `pad`."""
    if pad == 0:
        return input_images
    batch_size, channels, height, width = input_images.shape
    padded = torch.zeros(batch_size, channels, height + 2 * pad, width + 2 * pad,
                         dtype=input_images.dtype, device=input_images.device)
    padded[:, :, pad:pad + height, pad:pad + width] = input_images
    return padded


class ABCConv2d(ABC):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride

    def set_kernel(self, kernel):
        self.kernel = kernel

    @abstractmethod
    def __call__(self, input_tensor):
        pass
