"""The shared union-find against connected components found by a plain search."""
import numpy as np

from shallowcnn.data.unionfind import UnionFind


def components_by_search(n, edges):
    """Component label of every item: depth-first search over the edges (the reference)."""
    neighbours = [[] for _ in range(n)]
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    label = [-1] * n
    for start in range(n):
        if label[start] < 0:
            stack = [start]
            label[start] = start
            while stack:
                for m in neighbours[stack.pop()]:
                    if label[m] < 0:
                        label[m] = start
                        stack.append(m)
    return label


def test_groups_equal_connected_components():
    rng = np.random.default_rng(0)
    for n, n_edges in ((1, 0), (12, 5), (40, 30), (40, 80)):
        edges = [tuple(int(v) for v in rng.integers(0, n, 2)) for _ in range(n_edges)]
        sets = UnionFind(n)
        for a, b in edges:
            sets.join(a, b)
        roots, label = sets.roots(), components_by_search(n, edges)
        same_root = np.equal.outer(roots, roots)
        same_label = np.equal.outer(label, label)
        np.testing.assert_array_equal(same_root, same_label)
