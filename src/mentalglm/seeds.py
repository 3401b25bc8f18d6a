"""The project's default random seed: samples, splits of a run, classifier heads and bootstraps start here."""

DEFAULT_SEED = 13
