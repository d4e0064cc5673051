"""Small helpers shared by the student and teacher networks."""

from __future__ import annotations


def evenly_spaced_blocks(depth: int, count: int = 4) -> tuple[int, ...]:
    """0-based indices of ``count`` evenly spaced blocks ending with the last one (depth 12 -> 2, 5, 8, 11).

    The student's decoder taps and the teacher's distillation layers are both chosen this way, so block ``i`` of
    the student is aligned with the block at the same relative depth of the teacher.
    """
    if not 0 < count <= depth:
        raise ValueError(f"cannot pick {count} blocks out of {depth}")
    return tuple(depth * (i + 1) // count - 1 for i in range(count))
