"""How sensitive a dataset or model is: the registry stores it, policies select on it."""

from collections.abc import Iterable
from enum import StrEnum


class Classification(StrEnum):
    """How sensitive a dataset or model is: public < internal < confidential < restricted.

    Compare sensitivities by ``rank``, never by the strings (which sort alphabetically). A
    workload is as sensitive as its most sensitive dataset or model (``highest``), which is
    what policy CEL sees as ``workload.classification``.
    """

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"

    @property
    def rank(self) -> int:
        """Position in the order of sensitivity: 0 for ``public`` up to 3 for ``restricted``."""
        return _CLASSIFICATION_RANK[self]

    @classmethod
    def highest(cls, values: Iterable["Classification"]) -> "Classification | None":
        """The most sensitive of ``values``; ``None`` when there are none."""
        return max(values, key=lambda value: _CLASSIFICATION_RANK[value], default=None)


_CLASSIFICATION_RANK = {value: rank for rank, value in enumerate(Classification)}
