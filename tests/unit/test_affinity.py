"""AffinityMap: names a client chose (a Live setup's resumption handle, up to a 16 MiB message) bounded."""

from __future__ import annotations

from gptload.proxy.affinity import MAX_NAME, AffinityMap
from gptload.store.base import RESOURCE, Binding


class _Store:
    """Counts the lookups that reach the store (none is bound)."""

    def __init__(self) -> None:
        self.gets: list[str] = []
        self.puts: list[Binding] = []

    def get_binding(self, kind: str, name: str, now: float) -> Binding | None:
        self.gets.append(name)
        return None

    def put_binding(self, binding: Binding) -> None:
        self.puts.append(binding)


def test_a_name_longer_than_any_bound_one_is_neither_looked_up_nor_remembered():
    store = _Store()
    affinity = AffinityMap(store, capacity=10)  # type: ignore[arg-type]
    huge = "live-resumption/" + "h" * (1024 * 1024)
    assert affinity.lookup(RESOURCE, huge) is None
    assert store.gets == []  # never sent to the store (Firestore: a document id is at most 1,500 bytes)
    affinity.bind(Binding(RESOURCE, huge, "g", "k", "https://u", 1e12))
    assert store.puts == [] and affinity.lookup(RESOURCE, huge) is None
    assert all(len(name) <= MAX_NAME for _, name in affinity._cache)  # no megabyte kept per distinct handle
    name = "live-resumption/" + "h" * 100
    assert affinity.lookup(RESOURCE, name) is None and store.gets == [name]
