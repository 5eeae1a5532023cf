"""services.heap: the startup heap is frozen out of the cyclic collector's reach, after collecting its garbage."""

from __future__ import annotations

import gc
import weakref

from services.heap import freeze_startup_objects


def test_startup_objects_are_frozen_and_garbage_is_collected_first() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    kept = [Node() for _ in range(100)]
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() >= 100
        # Frozen: in no generation a collection walks any more.
        collectable = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert not [node for node in kept if id(node) in collectable]
        assert gone() is None  # the cycle was collected, not frozen
    finally:
        gc.unfreeze()
