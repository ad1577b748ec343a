"""Placeholder until the LTC/CfC work lands in this file (being written now)."""


class LTC:  # pragma: no cover
    def __init__(self, *a, **k):
        raise NotImplementedError("LTC is being implemented")


class CfC(LTC):  # pragma: no cover
    pass
