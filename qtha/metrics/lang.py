"""Language detection: a sample is Chinese when it contains CJK ideographs."""
from __future__ import annotations

import re
from typing import Optional

LANGS = ("zh", "en")
# CJK Unified Ideographs, Extension A, Compatibility Ideographs and Extensions B–F.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")


def is_chinese(text: str) -> bool:
    """True when ``text`` contains at least one CJK ideograph."""
    return _CJK.search(text) is not None


def pair_is_chinese(prediction: str, reference: str, lang: Optional[str]) -> bool:
    """Whether to score this pair with the Chinese tokenisers.

    ``lang`` forces the choice; otherwise the pair is Chinese when either side contains CJK, so
    both sides always share one tokeniser (the Chinese ones degrade gracefully on Latin text,
    whereas English tokenisers would turn a whole Chinese sentence into one token).
    """
    if lang is not None:
        return lang == "zh"
    return is_chinese(reference) or is_chinese(prediction)
