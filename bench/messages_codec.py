"""The cost of the typed messages (fleet.messages) on the generation path, against the untyped
dicts they replaced, in the same run: what the API does to a validated chat request before the
replica reads it (build + xoscar's pickle round trip), and what a stream frame costs on the
replica channel (write on the replica, read and type-check on the API). Prints JSON, medians in
microseconds per message.

    python bench/messages_codec.py
"""

from __future__ import annotations

import json
import pickle
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from fleet.api.protocol.generation import ChatCompletionRequest
from fleet.channel.codec import (
    FrameSplitter,
    decode_stream_frame,
    encode_frame,
    encode_stream_frame,
)
from fleet.messages import StreamFrame

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Say hello in five words."}],
           "max_tokens": 32, "temperature": 0.0, "stream": True}
CHUNK = {"index": 0, "delta": {"content": " hello"}, "logprobs": None, "finish_reason": None}


def _median_us(work: Callable[[], Any], number: int = 20_000, repeat: int = 7) -> float:
    return round(statistics.median(timeit.repeat(work, number=number, repeat=repeat))
                 / number * 1e6, 3)


def main() -> None:
    def dict_call() -> Any:  # what the API sent before: the request dumped to a dict
        body = ChatCompletionRequest.model_validate(REQUEST)
        dumped = body.model_dump(exclude_unset=True,
                                 exclude={"stream", "stream_options", "user", "store", "metadata"})
        return pickle.loads(pickle.dumps(dumped, protocol=5))

    def typed_call() -> Any:
        body = ChatCompletionRequest.model_validate(REQUEST)
        return pickle.loads(pickle.dumps(body.generation_call(), protocol=5))

    dict_reader = FrameSplitter()

    def dict_frame() -> Any:
        (frame,) = dict_reader.feed(encode_frame({"stream": "s" * 32, "chunks": [CHUNK],
                                                     "done": False}))
        return frame

    typed_reader = FrameSplitter()
    typed_reader.read_json = decode_stream_frame  # as the API's end reads after the handshake

    def typed_frame() -> Any:
        (frame,) = typed_reader.feed(encode_stream_frame(
            StreamFrame(stream="s" * 32, chunks=[CHUNK])))
        return frame

    results = {
        "generation_call_us": {"dict": _median_us(dict_call), "typed": _median_us(typed_call)},
        "stream_frame_us": {"dict": _median_us(dict_frame), "typed": _median_us(typed_frame)},
    }
    for row in results.values():
        row["typed_over_dict"] = round(row["typed"] / row["dict"], 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
