"""Model prices and the token estimates behind "cost saved".

A cache hit saves one model call. What it saves in money is the tokens that call
would have used times the model's price. The tokens come, in order of preference,
from the usage stored with the entry that answered (carried on the hit event), from
the usage of the model call that produced the entry (seen earlier in this process),
or from a length estimate (4 characters per token).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Annotated, Generic, TypeVar

import msgspec

from stagecache._validate import CheckNumbers

__all__ = ["BoundedMap", "ModelPrice", "PriceTable", "TokenCount", "estimate_tokens"]

_K = TypeVar("_K")
_V = TypeVar("_V")

#: USD per 1,000 tokens: finite, 0 to 1,000.
Price = Annotated[float, msgspec.Meta(ge=0, le=1000)]

#: Characters per token of the length estimate (OpenAI's rule of thumb for English).
CHARS_PER_TOKEN = 4


class ModelPrice(msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True):
    """The price of one model, in USD per 1,000 tokens.

    Attributes:
        input_per_1k: price of 1,000 prompt (input) tokens.
        output_per_1k: price of 1,000 completion (output) tokens.
    """

    input_per_1k: Price = 0.0
    output_per_1k: Price = 0.0


class TokenCount(msgspec.Struct, frozen=True):
    """Prompt and completion tokens of one model call."""

    prompt: int = 0
    completion: int = 0


def estimate_tokens(chars: int) -> int:
    """Tokens of a text of ``chars`` characters, by the 4-characters rule."""
    return (max(chars, 0) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


class PriceTable:
    """Prices by model id, with ``"*"`` as the price of any other model.

    Args:
        prices: model id -> price. A model with no entry (and no ``"*"``) costs 0.
    """

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = dict(prices or {})

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or None when it has none."""
        return self._prices.get(model) or self._prices.get("*")

    def cost(self, model: str, tokens: TokenCount) -> float:
        """The cost in USD of ``tokens`` on ``model`` (0.0 without a price)."""
        price = self.price(model)
        if price is None:
            return 0.0
        return (
            tokens.prompt * price.input_per_1k + tokens.completion * price.output_per_1k
        ) / 1000.0


class BoundedMap(Generic[_K, _V]):
    """A dict that forgets its oldest keys past ``maxsize`` (memory stays bounded).

    Used to remember which model call produced which cache entry without growing
    with the traffic of a long-lived process.
    """

    __slots__ = ("_data", "_maxsize")

    def __init__(self, maxsize: int = 10_000) -> None:
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._maxsize = maxsize

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def values(self) -> list[_V]:
        """A snapshot of the values, oldest first."""
        return list(self._data.values())

    def put(self, key: _K, value: _V) -> None:
        """Remember ``key``; the oldest key goes when the map is full."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._maxsize:
            self._data.popitem(last=False)

    def get(self, key: _K) -> _V | None:
        """The value of ``key``, or None."""
        return self._data.get(key)

    def pop(self, key: _K) -> _V | None:
        """Remove and return the value of ``key``, or None."""
        return self._data.pop(key, None)
