"""How many channels each Pillow mode becomes when convfilter reads it.

Alpha is dropped; palette, CMYK and the other colour modes become RGB;
the one-band modes (1, L, LA, I, I;16, F) stay one channel.
"""

ONE_CHANNEL_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def channels_of_mode(mode: str) -> int:
    return 1 if mode in ONE_CHANNEL_MODES else 3
