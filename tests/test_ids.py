"""Ids: 128 random bits each, never handed out twice, not even by a forked child."""

from __future__ import annotations

import os
import re

import pytest

from bridge.translate.ids import new_id, random_hex

COUNT = 20_000


def test_ids_are_the_prefix_and_128_random_bits_and_never_repeat() -> None:
    ids = [new_id("resp") for _ in range(COUNT)]
    assert all(re.fullmatch(r"resp_[0-9a-f]{32}", made) for made in ids)
    assert len(set(ids)) == COUNT
    # Every hex digit turns up about as often as the others (a block reused, or zeros,
    # would not): 640,000 digits, 40,000 each expected.
    digits = "".join(made[5:] for made in ids)
    assert all(36_000 < digits.count(digit) < 44_000 for digit in "0123456789abcdef")
    assert len(random_hex(5000)) == 10_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    new_id("resp")  # the block is filled
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, new_id("resp").encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    childs = os.read(read, 100).decode()
    os.close(read)
    assert status == 0
    assert childs != new_id("resp")
