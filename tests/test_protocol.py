import os
import pickle

import pytest
import torch

from grader.protocol import Channel, ProtocolError, tensor_from_wire, tensor_to_wire


@pytest.mark.parametrize("tensor", [
    torch.randn(2, 3, 4, 5),
    torch.randn(3, 4).t(),                      # not contiguous
    torch.randn(4).to(torch.bfloat16),
    torch.arange(6, dtype=torch.int64).reshape(2, 3),
    torch.zeros(0, 3),
    torch.tensor(3.5, dtype=torch.float64),
    torch.tensor([True, False]),
])
def test_tensors_round_trip_as_plain_data(tensor):
    spec, raw = tensor_to_wire(tensor)
    back = tensor_from_wire(spec, raw)
    assert type(back) is torch.Tensor
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor)


def test_a_tensor_subclass_crosses_as_a_plain_tensor():
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

    liar = torch.randn(3).as_subclass(Liar)
    spec, raw = tensor_to_wire(liar)
    assert type(tensor_from_wire(spec, raw)) is torch.Tensor


@pytest.mark.parametrize("spec, raw", [
    ({"dtype": "object", "shape": [1]}, b"\0" * 8),
    ({"dtype": "float32", "shape": [2]}, b"\0" * 4),
    ({"dtype": "float32", "shape": [-1]}, b""),
    ({"dtype": "float32", "shape": "2"}, b"\0" * 8),
])
def test_malformed_tensor_specs_are_rejected(spec, raw):
    with pytest.raises(ProtocolError):
        tensor_from_wire(spec, raw)


def test_channel_carries_header_and_tensors_without_pickle():
    read_a, write_a = os.pipe()
    sender, receiver = Channel(-1, write_a), Channel(read_a, -1)
    payload = {"output": torch.randn(2, 2)}
    sender.send({"event": "result", "note": "x"}, payload)
    header, tensors = receiver.receive(deadline=None)
    assert header == {"event": "result", "note": "x"}
    assert torch.equal(tensors["output"], payload["output"])


def test_channel_refuses_a_pickle_payload():
    read_a, write_a = os.pipe()
    blob = pickle.dumps({"event": "result"})
    os.write(write_a, len(blob).to_bytes(4, "big") + (0).to_bytes(4, "big") + blob)
    with pytest.raises(ProtocolError):
        Channel(read_a, -1).receive(deadline=None)


def test_a_message_split_across_short_polls_is_not_lost():
    import threading
    import time

    from grader.protocol import ChannelTimeout

    read_fd, write_fd = os.pipe()
    receiver = Channel(read_fd, -1)
    sender_side = Channel(-1, write_fd)
    read_back, write_back = os.pipe()
    Channel(-1, write_back).send({"event": "result"}, {"output": torch.arange(1000.)})
    framed = os.read(read_back, 1 << 20)

    def trickle():
        for start in range(0, len(framed), 700):
            os.write(write_fd, framed[start:start + 700])
            time.sleep(0.02)

    thread = threading.Thread(target=trickle)
    thread.start()
    timeouts = 0
    while True:
        try:
            header, tensors = receiver.receive(time.monotonic() + 0.005)
            break
        except ChannelTimeout:
            timeouts += 1
    thread.join()
    assert timeouts > 0 and header == {"event": "result"}
    assert torch.equal(tensors["output"], torch.arange(1000.))
    del sender_side
