"""Language detection: a sample is Chinese when it contains CJK ideographs."""
from __future__ import annotations

import re

# CJK Unified Ideographs, Extension A, Compatibility Ideographs and Extensions B–F.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")


def is_chinese(text: str) -> bool:
    """True when ``text`` contains at least one CJK ideograph."""
    return _CJK.search(text) is not None
