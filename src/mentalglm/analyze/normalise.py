"""Spellings of self-harm words the classifiers never saw, folded back to the words they were trained on.

The default classifiers read character n-grams of simplified Chinese Weibo posts, so 自殺 (traditional), 紫砂
(a homophone used to dodge moderation), 自 杀 (spaced), zisha (pinyin), 🔪 or "kill myself" carry none of the
weight of 自杀. This module rewrites the classifier input only (the post shown to the user and the evidence
offsets stay on the original):

- traditional characters to simplified (OpenCC's ``t2s`` tables, package ``opencc-python-reimplemented``);
- a small obfuscation lexicon: homophones (紫砂 自鲨 → 自杀, 想鼠 想亖 → 想死, 隔腕 → 割腕, 烧碳 → 烧炭), a
  lone ``s`` standing for 死 (s了, 去s, 累s了), separators inside a lexicon word (自 杀, 遗.书), a few emoji
  (🔪 → 刀, 💊 → 药, 🩸 → 血, 🪢 → 绳);
- pinyin of the same words (zisha, xiang si, bu xiang huo le, zs) and a few English phrases of code-switched
  posts (kill myself, I want to die, suicide note, self-harm, overdose).

It is a lexicon, so it is narrow by design: it folds the spellings listed here and nothing else, and every
entry says which word it stands for. Words that are ordinary elsewhere are guarded (紫砂壶 stays a teapot).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import cache

_SEPARATOR = r"(?:[\s\u3000.·•・*\-_~|/\\+]{1,3})?"
_LATIN_BEFORE, _LATIN_AFTER = r"(?<![A-Za-z])", r"(?![A-Za-z])"

# canonical word -> spellings (each may be split by separators: 自 杀, 遗.书)
_OBFUSCATED: dict[str, tuple[str, ...]] = {
    "自杀": ("自杀", "紫砂", "自鲨", "紫杀", "自刹", "紫鲨"),
    "想死": ("想死", "想鼠", "想亖"),
    "去死": ("去死", "去鼠", "去亖"),
    "割腕": ("割腕", "隔腕", "搁腕"),
    "烧炭": ("烧炭", "烧碳"),
    "轻生": ("轻生",),
    "跳楼": ("跳楼",),
    "遗书": ("遗书",),
    "安眠药": ("安眠药",),
    "上吊": ("上吊",),
    "自残": ("自残",),
    "不想活": ("不想活",),
    "活不下去": ("活不下去",),
    "结束生命": ("结束生命",),
}
# ordinary words that contain a homophone above
_NOT_OBFUSCATED = {"紫砂": "壶锅杯茶陶泥器煲盆"}
_EMOJI = {"🔪": "刀", "🗡": "刀", "💊": "药", "🩸": "血", "🪢": "绳", "⚰": "棺材", "🪦": "墓碑", "🔫": "枪"}
# pinyin syllables -> word; syllables may be joined, or split by a space, ' or -
_PINYIN: dict[str, str] = {
    "zi sha": "自杀", "xiang si": "想死", "qu si": "去死", "xun si": "寻死", "qing sheng": "轻生",
    "tiao lou": "跳楼", "tiao he": "跳河", "tiao jiang": "跳江", "ge wan": "割腕", "an mian yao": "安眠药",
    "shao tan": "烧炭", "shang diao": "上吊", "zi can": "自残", "bu xiang huo le": "不想活了",
    "bu xiang huo": "不想活", "huo bu xia qu": "活不下去", "jie shu sheng ming": "结束生命",
}
_PINYIN_ABBREVIATIONS = {"zs": "自杀"}
_ENGLISH: tuple[tuple[str, str], ...] = (
    (r"(?:want|wants|wanted|wanna)\s+(?:to\s+)?die", "想死"),
    (r"kill(?:ing)?\s+(?:my|him|her|them)sel(?:f|ves)", "自杀"),
    (r"suicide\s+note", "遗书"),
    (r"suicidal", "想自杀"),
    (r"suicide", "自杀"),
    (r"end(?:ing)?\s+my\s+life", "结束生命"),
    (r"(?:do\s*n[o']?t|don’t)\s+want\s+to\s+live(?:\s+any\s*more)?", "不想活了"),
    (r"self[\s-]?harm(?:ing)?", "自残"),
    (r"cut(?:ting)?\s+myself", "割自己"),
    (r"overdos(?:e|ed|ing)", "吞药"),
    (r"hang(?:ing)?\s+myself", "上吊"),
    (r"take\s+my\s+(?:own\s+)?life", "结束生命"),
    (r"end\s+it\s+all|let\s+it\s+all\s+end", "结束一切"),
    (r"better\s+off\s+dead", "死了更好"),
    (r"jump(?:ing)?\s+off", "跳下去"),
)
# a lone Latin s after these characters, or before these, is 死 (想s, 累s了, s了, 去s)
_S_AFTER, _S_BEFORE = "想去要快该累笑饿困热冷气烦愁吓", "了掉吧啊"


def _spaced(word: str) -> str:
    return _SEPARATOR.join(re.escape(ch) for ch in word)


def _pinyin(syllables: str) -> str:
    return _LATIN_BEFORE + r"[\s'-]?".join(syllables.split()) + _LATIN_AFTER


@cache
def _rules() -> tuple[tuple[str, re.Pattern[str], str | Callable[[re.Match[str]], str]], ...]:
    rules: list[tuple[str, re.Pattern[str], str | Callable[[re.Match[str]], str]]] = []
    emoji = "|".join(re.escape(e) for e in _EMOJI)
    rules.append(("emoji", re.compile(f"(?:{emoji})\ufe0f?"), lambda m: _EMOJI[m.group(0).rstrip("\ufe0f")]))
    for syllables, word in sorted(_PINYIN.items(), key=lambda kv: -len(kv[0])):
        rules.append(("pinyin", re.compile(_pinyin(syllables), re.IGNORECASE), word))
    for abbreviation, word in _PINYIN_ABBREVIATIONS.items():
        rules.append(("pinyin", re.compile(_LATIN_BEFORE + abbreviation + _LATIN_AFTER, re.IGNORECASE), word))
    for phrase, word in _ENGLISH:
        rules.append(("english", re.compile(_LATIN_BEFORE + phrase + _LATIN_AFTER, re.IGNORECASE), word))
    rules.append(("lone_s", re.compile(
        rf"(?<=[{_S_AFTER}])\s*[sS]{_LATIN_AFTER}\s*|(?<![A-Za-z0-9'’])[sS]\s*(?=[{_S_BEFORE}])"), "死"))
    rules.append(("variant", re.compile("亖"), "死"))
    for word, spellings in _OBFUSCATED.items():
        for spelling in spellings:
            guard = f"(?![{_NOT_OBFUSCATED[spelling]}])" if spelling in _NOT_OBFUSCATED else ""
            kind = "spaced" if spelling == word else "homophone"
            rules.append((kind, re.compile(_spaced(spelling) + guard), word))
    return tuple(rules)


@cache
def _converter():
    try:
        from opencc import OpenCC
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ImportError("traditional -> simplified folding needs opencc-python-reimplemented: "
                          "pip install opencc-python-reimplemented==0.1.7") from exc
    return OpenCC("t2s")


def to_simplified(text: str) -> str:
    return _converter().convert(text)


def normalise(text: str, fired: list[str] | None = None) -> str:
    """The classifier input for ``text``; ``fired`` (when given) collects the names of the rules that changed it."""
    out = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    if fired is not None and out != text:
        fired.append("format_characters")
    simplified = to_simplified(out)
    if fired is not None and simplified != out:
        fired.append("traditional")
    out = simplified
    for name, pattern, replacement in _rules():
        new = pattern.sub(replacement, out)
        if new != out:
            if fired is not None and name not in fired:
                fired.append(name)
            out = new
    return out
