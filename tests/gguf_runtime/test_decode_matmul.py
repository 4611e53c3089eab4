"""gguf_runtime/decode_matmul.py: each decode layout's parts, as the region calls them
by address, give its module's parallel kernel's output."""
import numba
import numpy as np

import quant_formats
from gguf_runtime import decode_matmul
from quant_formats import launch


def test_every_decode_layout_maps_to_its_module_kernel():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((64, 256)).astype(np.float32)
    packable = [q for q in quant_formats.ALL_FORMATS if hasattr(quant_formats.get(q), "pack")]
    assert len(packable) >= 10
    for qtype in packable:
        fmt = quant_formats.get(qtype)
        imatrix = np.ones(256, np.float32)  # IQ2_XXS needs one
        packed = quant_formats.pack(quant_formats.quantize(rows, qtype, imatrix), qtype)
        kernel, offsets, group = decode_matmul.KERNELS[decode_matmul.layout_key(packed)]
        assert kernel is fmt.packed_matmul, qtype.name
        # the region's parts are the kernel's: one call of each per group, the same output
        qs, d, sums = quant_formats.get(fmt.VEC_DOT_TYPE).quantize(rows[:3])
        want = np.full((3, 64), np.nan, np.float32)
        kernel(*packed, qs, d, sums, want)
        got = np.full((3, 64), np.nan, np.float32)
        x_offsets = offsets(*packed, qs)
        for g in range(packed[0].shape[0]):
            group(*packed, qs, d, sums, x_offsets, got, g)
        assert np.array_equal(got, want), qtype.name
        assert fmt.VEC_DOT_TYPE.name in decode_matmul.ACT_KINDS
        # the region's form: the layout by address, the group function at its address
        kind = decode_matmul.KINDS[decode_matmul.layout_key(packed)]
        assert numba.typeof(packed) == decode_matmul.LAYOUT_TYPES[kind], qtype.name
        layout_bytes = launch.to_bytes(packed)
        x_offsets_region = decode_matmul._offsets(kind, layout_bytes.ctypes.data, qs)
        assert np.array_equal(x_offsets_region, x_offsets), qtype.name
        address = launch.address_for(group, packed + (qs, d, sums, x_offsets, got))
        got[:] = np.nan
        for g in range(packed[0].shape[0]):
            decode_matmul._group_at(kind, address, layout_bytes.ctypes.data, qs, d, sums,
                                    x_offsets_region, got, g)
        assert np.array_equal(got, want), qtype.name
