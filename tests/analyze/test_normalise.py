"""Traditional characters, obfuscations, pinyin and English self-harm phrases fold back to the trained words."""

import pytest

pytest.importorskip("opencc", reason="normalise needs opencc-python-reimplemented (pip install -e .)")

from mentalglm.analyze.normalise import normalise  # noqa: E402


@pytest.mark.parametrize("text", [
    "今天和好朋友去吃了火锅，聊到半夜，好久没这么开心了！",
    "我想自杀，安眠药已经准备好了，就在今晚。",
    "这把紫砂壶是外婆留给我的。",
    "iPhone 5s掉进水里了，好心疼。",
    "It's 周末了，出去走走吧。",
    "我用 zsh 写脚本，designer 说界面要改。",
    "今天好累 明天还要上班",
])
def test_ordinary_and_already_plain_text_is_unchanged(text):
    fired: list[str] = []
    assert normalise(text, fired) == text
    assert fired == []


@pytest.mark.parametrize(("text", "expected", "rule"), [
    ("我想自殺，藥都買好了。", "我想自杀，药都买好了。", "traditional"),
    ("我想紫砂，今晚就走。", "我想自杀，今晚就走。", "homophone"),
    ("真的好想鼠。", "真的好想死。", "homophone"),
    ("准备今晚隔腕。", "准备今晚割腕。", "homophone"),
    ("明天就去s，地方都选好了。", "明天就去死，地方都选好了。", "lone_s"),
    ("s了就解脱了。", "死了就解脱了。", "lone_s"),
    ("加班到凌晨，累 s 了。", "加班到凌晨，累死了。", "lone_s"),
    ("每天都在想怎么亖。", "每天都在想怎么死。", "variant"),
    ("我决定自 杀了，遗.书写好了。", "我决定自杀了，遗书写好了。", "spaced"),
    ("又拿🔪割了手腕，🩸止不住。", "又拿刀割了手腕，血止不住。", "emoji"),
    ("我想zisha，今晚就吃药。", "我想自杀，今晚就吃药。", "pinyin"),
    ("真的xiang si。", "真的想死。", "pinyin"),
    ("Bu Xiang Huo Le，明天去tiao lou。", "不想活了，明天去跳楼。", "pinyin"),
    ("今天准备zs，别劝我。", "今天准备自杀，别劝我。", "pinyin"),
    ("I want to die 真的好累。", "I 想死 真的好累。", "english"),
    ("已经写好suicide note了。", "已经写好遗书了。", "english"),
    ("又self-harm了。", "又自残了。", "english"),
])
def test_spellings_fold_to_the_trained_word(text, expected, rule):
    fired: list[str] = []
    assert normalise(text, fired) == expected
    assert rule in fired


def test_format_characters_are_dropped():
    assert normalise("自\u200b杀") == "自杀"
