"""The typed messages between Fleet's processes (fleet.messages): they survive the trips they
make (pickled by xoscar, written on the replica channel), and an error keeps its kind from the
engine to the status the client gets."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from fleet.api.protocol.generation import ChatCompletionRequest, CompletionRequest
from fleet.channel.api_end import StreamInbox
from fleet.channel.codec import FrameSplitter, encode_stream_frame, read_stream_frame
from fleet.errors import BadRequest, FleetError, TooManyRequests, Unavailable
from fleet.messages import GenerationCall, StreamError, StreamFrame, Usage

HELLO = [{"role": "user", "content": "hi"}]


def test_a_request_becomes_a_call_with_only_what_the_replica_reads():
    chat = ChatCompletionRequest.model_validate({
        "model": "m", "messages": HELLO, "stream": True, "user": "u", "temperature": 1,
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"})
    call = chat.generation_call()
    assert call.kind == "chat" and call.messages == HELLO and call.temperature == 1.0
    # The tool as the client sent it (no field it left out added as null).
    assert call.tools == [{"type": "function", "function": {"name": "f"}}]
    assert call.tool_choice == "required" and call.n == 1
    completion = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2], "logprobs": 2})
    assert completion.generation_call() == GenerationCall(kind="completion", prompt=[1, 2],
                                                          logprobs=2)


def test_calls_and_frames_come_back_equal_from_a_pickle():
    call = GenerationCall(kind="chat", messages=HELLO, stop=["\n"], logit_bias={"5": -1.0},
                          seed=-(2**63), guided_json={"type": "object"})
    frame = StreamFrame(stream="s", chunks=[{"index": 0, "delta": {"content": "é"}}], done=True,
                        usage=Usage.of(3, 4))
    # A client's JSON may hold integers beyond 64 bits (in a message's own fields): msgpack
    # cannot write them, the call still travels.
    huge = GenerationCall(kind="chat", messages=[{"role": "user", "content": "hi",
                                                  "x": -93588971675500986368}])
    for message in (call, frame, huge):
        assert pickle.loads(pickle.dumps(message)) == message


@pytest.mark.parametrize(("raised", "kind", "status"), [
    (BadRequest("grammar too deep", code="invalid_schema"), BadRequest, 400),
    (TooManyRequests("busy"), TooManyRequests, 429),
    (RuntimeError("CUDA error"), Unavailable, 503),
])
def test_an_error_keeps_its_kind_across_the_channel(raised, kind, status):
    async def read() -> FleetError:
        frame = StreamFrame(stream="s", done=True, error=StreamError.of(raised))
        (arrived,) = FrameSplitter().feed(encode_stream_frame(frame))
        inbox = StreamInbox()
        inbox.add(read_stream_frame(arrived))
        with pytest.raises(FleetError) as caught:
            await inbox.next(5)
        return caught.value

    error = asyncio.run(read())
    assert type(error) is kind and error.status_code == status
    if isinstance(raised, FleetError):
        assert (error.message, error.code) == (raised.message, raised.code)
    else:  # an engine's own exception: named, as a 503 the client may retry
        assert error.message == "the engine failed: RuntimeError: CUDA error"
