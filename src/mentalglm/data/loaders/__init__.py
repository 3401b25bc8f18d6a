"""One module per public dataset; importing this package registers them all."""

from mentalglm.data.loaders import (  # noqa: F401
    cnsenti,
    cogdis,
    cognitive_pathway,
    depression_lexicon,
    imhi,
    screen_seed,
    simplifyweibo_4_moods,
    smp2020_ewect,
    socialcd3k,
    sos_1k,
    sos_4k,
    sos_hl_1k,
    suicide_lexicon,
    weibo_senti_100k,
)
