"""The hash table behind strings.StringArray.index_of (a Numba loop: 262144 inserts
take ~5 ms, a Python loop ~100)."""
from numba import njit

import quant_formats  # noqa: F401  (installs the project-wide Numba cache stamp first)


@njit(cache=True, nogil=True)
def build_table(hashes, table, replaced):
    """Open addressing, linear probing: table[slot] = id, -1 empty; len(table) a power
    of two above len(hashes). An id whose hash is already in the table replaces the
    earlier id (the last of equal strings wins); the (earlier, later) pairs go to
    replaced, their count returned, for the caller to check the strings are equal."""
    mask = table.shape[0] - 1
    n_replaced = 0
    for i in range(hashes.shape[0]):
        slot = hashes[i] & mask
        while True:
            j = table[slot]
            if j < 0 or hashes[j] == hashes[i]:
                if j >= 0:
                    replaced[n_replaced, 0] = j
                    replaced[n_replaced, 1] = i
                    n_replaced += 1
                table[slot] = i
                break
            slot = (slot + 1) & mask
    return n_replaced
