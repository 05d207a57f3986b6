"""Reference solutions for the Conv2d assignment (no bias, zero padding).

Three classes mirror the course's templates; the layout-defining work lives in
module-level pure functions so the grader can check a student's helper methods
one at a time. No convolution or im2col operator is used anywhere: the point is
to be an independent oracle, built only from indexing and matmul.

Everything is created on the kernel's / input's device and dtype and nothing
leaves the device, so the same code runs on CPU and CUDA.
"""
import torch

from assignments.conv2d.scaffold import ABCConv2d, calc_out_shape, get_padding2d


def _window_starts(out_size, kernel_size, stride, dilation, device):
    """(out_size, kernel_size) tensor: padded-input coordinate read by output
    position i and kernel tap t along one axis, i*stride + t*dilation."""
    positions = torch.arange(out_size, device=device) * stride
    taps = torch.arange(kernel_size, device=device) * dilation
    return positions[:, None] + taps[None, :]


def unsqueeze_kernel(kernel, input_shape, stride, padding, dilation,
                     output_height, output_width):
    """The convolution as one matrix acting on a flattened (padded) image.

    kernel: (out_channels, in_channels, k, k).
    input_shape: shape of the *unpadded* input, (..., in_channels, H, W); only
        the last three entries are used. Columns index the input after zero
        padding by `padding`, so pass padding=0 with an already padded shape.
    Returns (out_channels*OH*OW, in_channels*Hp*Wp), Hp = H + 2*padding,
    Wp = W + 2*padding, with row o*OH*OW + i*OW + j and column
    c*Hp*Wp + y*Wp + x, such that
    `(matrix @ padded.view(batch, -1).T).T.view(batch, out_channels, OH, OW)`
    is the convolution.
    """
    out_channels, in_channels, k, _ = kernel.shape
    height = input_shape[-2] + 2 * padding
    width = input_shape[-1] + 2 * padding
    device = kernel.device
    ys = _window_starts(output_height, k, stride, dilation, device)  # (OH, k)
    xs = _window_starts(output_width, k, stride, dilation, device)   # (OW, k)

    # Broadcast every index to (O, OH, OW, C, k, k): one entry per kernel tap
    # per output element. Each (row, column) pair is hit exactly once, so a
    # plain indexed assignment (no accumulation) is enough.
    o = torch.arange(out_channels, device=device).view(-1, 1, 1, 1, 1, 1)
    c = torch.arange(in_channels, device=device).view(1, 1, 1, -1, 1, 1)
    i = torch.arange(output_height, device=device).view(1, -1, 1, 1, 1, 1)
    j = torch.arange(output_width, device=device).view(1, 1, -1, 1, 1, 1)
    y = ys.view(1, output_height, 1, 1, k, 1)
    x = xs.view(1, 1, output_width, 1, 1, k)
    rows = (o * output_height + i) * output_width + j
    cols = (c * height + y) * width + x
    shape = (out_channels, output_height, output_width, in_channels, k, k)

    matrix = kernel.new_zeros(out_channels * output_height * output_width,
                              in_channels * height * width)
    matrix[rows.expand(shape), cols.expand(shape)] = \
        kernel[:, None, None].expand(shape)
    return matrix


def convert_kernel(kernel):
    """(out_channels, in_channels, k, k) -> (out_channels, in_channels*k*k),
    column c*k*k + ky*k + kx."""
    return kernel.reshape(kernel.shape[0], -1)


def convert_input(padded_input, kernel_size, stride, dilation,
                  output_height, output_width):
    """im2col by indexing.

    padded_input: (batch, in_channels, Hp, Wp), already zero padded.
    Returns (in_channels*k*k, batch*OH*OW) with row c*k*k + ky*k + kx and
    column b*OH*OW + i*OW + j, so that `convert_kernel(kernel) @ result`,
    viewed as (out_channels, batch, OH, OW) and transposed to batch-first,
    is the convolution.
    """
    batch_size, in_channels = padded_input.shape[:2]
    device = padded_input.device
    ys = _window_starts(output_height, kernel_size, stride, dilation, device)
    xs = _window_starts(output_width, kernel_size, stride, dilation, device)
    # (B, C, OH, OW, ky, kx)
    patches = padded_input[:, :, ys[:, None, :, None], xs[None, :, None, :]]
    return patches.permute(1, 4, 5, 0, 2, 3).reshape(
        in_channels * kernel_size * kernel_size,
        batch_size * output_height * output_width)


class _Conv2d(ABCConv2d):
    def __init__(self, in_channels, out_channels, kernel_size, stride,
                 padding=0, dilation=1):
        super().__init__(in_channels, out_channels, kernel_size, stride)
        self.padding = padding
        self.dilation = dilation

    def _out_shape(self, input_tensor):
        return calc_out_shape(input_tensor.shape, self.out_channels,
                              self.kernel_size, self.stride, self.padding,
                              self.dilation)


class Conv2dLoop(_Conv2d):
    def __call__(self, input_tensor):
        batch_size, out_channels, output_height, output_width = \
            self._out_shape(input_tensor)
        padded = get_padding2d(input_tensor, self.padding)
        span = self.dilation * (self.kernel_size - 1) + 1
        output = input_tensor.new_zeros(batch_size, out_channels,
                                        output_height, output_width)
        for b in range(batch_size):
            for o in range(out_channels):
                for i in range(output_height):
                    y = i * self.stride
                    for j in range(output_width):
                        x = j * self.stride
                        window = padded[b, :, y:y + span:self.dilation,
                                        x:x + span:self.dilation]
                        output[b, o, i, j] = (window * self.kernel[o]).sum()
        return output


class Conv2dMatrix(_Conv2d):
    def _unsqueeze_kernel(self, torch_input, output_height, output_width):
        # torch_input is already padded, hence padding=0 here.
        return unsqueeze_kernel(self.kernel, torch_input.shape, self.stride, 0,
                                self.dilation, output_height, output_width)

    def __call__(self, torch_input):
        batch_size, out_channels, output_height, output_width = \
            self._out_shape(torch_input)
        padded = get_padding2d(torch_input, self.padding)
        kernel_unsqueezed = self._unsqueeze_kernel(padded, output_height,
                                                   output_width)
        result = kernel_unsqueezed @ padded.reshape(batch_size, -1).permute(1, 0)
        return result.permute(1, 0).reshape(batch_size, out_channels,
                                            output_height, output_width)


class Conv2dMatrixV2(_Conv2d):
    def _convert_kernel(self):
        return convert_kernel(self.kernel)

    def _convert_input(self, torch_input, output_height, output_width):
        return convert_input(torch_input, self.kernel_size, self.stride,
                             self.dilation, output_height, output_width)

    def __call__(self, torch_input):
        batch_size, out_channels, output_height, output_width = \
            self._out_shape(torch_input)
        padded = get_padding2d(torch_input, self.padding)
        result = self._convert_kernel() @ self._convert_input(
            padded, output_height, output_width)
        # Columns are batch-major, so split them back and move batch first; the
        # course template's transpose chain scrambles anything bigger than 1x1.
        return result.view(out_channels, batch_size, output_height,
                           output_width).transpose(0, 1)
