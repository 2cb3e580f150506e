"""Model definitions: the LaDeDa teacher, the Tiny-LaDeDa student, top-K pooling, preprocessing."""

from ladeda_lib.models.base import PatchDetector
from ladeda_lib.models.pooling import DEFAULT_TOPK, TopKPool
from ladeda_lib.models.preprocessing import PREPROCESS_CHOICES, make_preprocess
from ladeda_lib.models.student import TinyLaDeDa
from ladeda_lib.models.teacher import LaDeDa

__all__ = [
    "DEFAULT_TOPK",
    "PREPROCESS_CHOICES",
    "LaDeDa",
    "PatchDetector",
    "TinyLaDeDa",
    "TopKPool",
    "make_preprocess",
]
