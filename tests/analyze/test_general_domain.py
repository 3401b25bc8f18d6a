"""A forum-only task's model card (suicide_level: SOS-1K) says how often ordinary posts get a crisis level, and
its domain check marks those posts, not the forum's."""

import pytest

from mentalglm.analyze.recipe import train_task_model


@pytest.mark.data
@pytest.mark.slow
def test_card_reports_flag_rate_on_ordinary_posts_and_negatives_lower_it(data_dir):
    plain = train_task_model("suicide_level", data_dir, c_grid=(1.0,), log=lambda _: None)
    general = plain.card["data"]["general_negatives"]
    assert general["posts"] == 0 and general["check_posts"].startswith("first 1000")
    check = plain.card["domain_check"]
    assert check["outside_rate"]["validation"] <= 0.05 and check["outside_rate"]["ordinary_check"] >= 0.8
    assert check["ordinary_check_flagged_crisis_and_outside"] <= general["flagged_crisis_rate"]
    assert check["in_domain_posts"] == plain.card["data"]["train_posts"]  # the forum's posts only
    with_negatives = train_task_model("suicide_level", data_dir, c_grid=(1.0,), log=lambda _: None,
                                      general_negatives=500)
    assert with_negatives.card["data"]["general_negatives"]["posts"] == 500
    assert (with_negatives.card["data"]["general_negatives"]["flagged_crisis_rate"]
            <= general["flagged_crisis_rate"])
