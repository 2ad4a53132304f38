"""Union-find (disjoint sets): which items end up connected after pairwise joins.

Used twice: calcifications linked into clusters (:mod:`shallowcnn.data.clusters`) and
runs of breast pixels joined into regions (:func:`shallowcnn.data.breast.largest_component`).
"""
from __future__ import annotations


class UnionFind:
    """``n`` items, each first its own group; :meth:`join` merges two groups.

    Every group is a tree; :meth:`root` names the group by its root and halves the path
    on the way up (each visited item then points to its grandparent), which keeps the
    trees flat, so joins and look-ups take nearly constant time.
    """

    def __init__(self, n: int):
        self.parent = list(range(int(n)))

    def root(self, k: int) -> int:
        """The root of item ``k``'s group (the same for every item of the group)."""
        parent = self.parent
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def join(self, a: int, b: int) -> None:
        """Merge the groups of ``a`` and ``b`` (the root of ``a``'s group names the result)."""
        self.parent[self.root(b)] = self.root(a)

    def roots(self) -> list:
        """The root of every item, in item order."""
        return [self.root(k) for k in range(len(self.parent))]
