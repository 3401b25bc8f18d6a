from mentalglm.data.pii import luhn_valid, scrub, valid_id_card


def _luhn_complete(prefix: str) -> str:
    for digit in "0123456789":
        if luhn_valid(prefix + digit):
            return prefix + digit
    raise AssertionError("no check digit")


def test_handles_links_emails_phones_are_replaced():
    result = scrub("//@小明同学:我好难过，联系我13812345678或者test.user@example.com 看 http://t.cn/A6abc", names=False)
    assert "小明同学" not in result.text and "13812345678" not in result.text
    assert "example.com" not in result.text and "t.cn" not in result.text
    assert result.counts == {"handle": 1, "phone": 1, "email": 1, "url": 1}


def test_id_card_needs_a_valid_check_digit():
    assert valid_id_card("11010519491231002X")
    assert not valid_id_card("110105194912310021")
    assert "[身份证号]" in scrub("号码11010519491231002X", names=False).text
    assert "110105194912310021" in scrub("号码110105194912310021", names=False).text


def test_bank_card_needs_luhn():
    card = _luhn_complete("622202020011223344")
    assert "[银行卡号]" in scrub(f"卡号{card}", names=False).text
    wrong = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert wrong in scrub(f"卡号{wrong}", names=False).text


def test_person_names_are_replaced_and_plain_text_kept():
    result = scrub("我叫张伟，今天王小明又说我没救了")
    assert "张伟" not in result.text and "王小明" not in result.text
    assert result.counts["name"] == 2
    plain = "今天又失眠了，什么都不想做"
    assert scrub(plain).text == plain


def test_brands_places_and_ordinary_words_tagged_as_names_survive():
    for text in ("明洪武十年，改变礼制", "最近超喜欢喝维他柠檬茶", "看把她美的"):
        assert scrub(text).text == text
