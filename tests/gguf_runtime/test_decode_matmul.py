"""gguf_runtime/decode_matmul.py: each decode layout's parts, as the region calls them
by address, give its module's parallel kernel's output."""
import numba
import numpy as np

import quant_formats
from gguf_runtime import decode_matmul, region
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


def test_share_span_is_the_start_of_the_thread_s_own_groups():
    """Nine row groups of 100 bytes' quants at address 1000, two threads: region.claim's
    shares are groups 0-3 and 4-8; a span is capped at PREFETCH_BYTES."""
    absent = decode_matmul.absent_spec()
    spec = absent[:3] + (9,) + absent[4:9] + (1000, 100)
    sync = region.new_sync(1, 2)
    assert decode_matmul.share_span(spec, sync, 0) == (1000, 400)
    assert decode_matmul.share_span(spec, sync, 1) == (1400, 500)
    cap = decode_matmul.PREFETCH_BYTES
    assert decode_matmul.share_span(spec[:9] + (1000, cap), sync, 1) == (1000 + 4 * cap, cap)
