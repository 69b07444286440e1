"""Every memory layout gives the right answer and leaves the input alone.

dtype x ndim 0..5 x every dim (negative ones too) x layout (C, F, rotated-transposed, [::2], [::-1], broadcast_to,
byte-swapped, read-only, misaligned, all of these at once) x special values, against an independent reference.
"""
import warnings

import numpy as np
import pytest

import csoftmax
from csoftmax import log_softmax, softmax, softmin
from csoftmax._csoftmax import CSM_SHORT_ROW_MAX

from _helpers import (LAYOUTS, SAME_VALUE_LAYOUTS, assert_softmax_close, bits, make_layout, native,
                      reference_softmax, row_reduce_dims, snapshot)

FLOAT_DTYPES = [np.float16, np.float32, np.float64]

# one shape per ndim: unit axes, short axes (<= CSM_SHORT_ROW_MAX: the across-rows kernel) and long ones (the row
# kernels)
SHAPES = {0: (), 1: (37,), 2: (7, 19), 3: (3, 17, 5), 4: (2, 3, 1, 18), 5: (2, 1, 17, 2, 3)}

VARIANTS = ("finite", "spread", "specials", "neginf_plane", "all_neginf", "huge")


def make_base(dtype, shape, variant, rng):
    """Values of one kind: ordinary, widely spread (subnormal results), NaN/inf sprinkled, a hyperplane of -inf,
    all -inf, or huge finite values (x - max overflows in the input's type)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    if variant == "finite":
        x = rng.standard_normal(size) * 3
    elif variant == "spread":
        low = {2: -20.0, 4: -120.0, 8: -800.0}[dtype.itemsize]
        x = rng.uniform(low, 0.0, size)
    elif variant == "specials":
        x = rng.standard_normal(size) * 3
        if size:
            for value in (np.nan, np.inf, -np.inf, -np.inf, -np.inf):
                x[rng.integers(0, size)] = value
    elif variant == "neginf_plane":
        # x[0, ...] = -inf: for dim != 0 those rows are entirely -inf (NaN); along dim 0 each row has one -inf (0)
        x = (rng.standard_normal(size) * 3).reshape(shape)
        if x.ndim:
            x[0] = -np.inf
        x = x.reshape(-1)
    elif variant == "all_neginf":
        x = np.full(size, -np.inf)
    elif variant == "huge":
        big = float(np.finfo(dtype).max)
        x = rng.choice([big, -big, 0.9 * big, -0.9 * big, 1.0, -1.0], size)
    else:
        raise ValueError(variant)
    return x.astype(dtype).reshape(shape)


def check_softmax_of_layout(x, dim, what):
    """softmax(x, dim) is right, of the input's memory order, native, new, and x is untouched."""
    before = snapshot(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (nor anything else) ever
        y = softmax(x, dim)
    assert snapshot(x) == before, f"{what}: the input was modified"
    out_dtype = native(x.dtype) if x.dtype.kind == "f" else np.dtype(np.float64)
    assert isinstance(y, np.ndarray) and type(y) is np.ndarray
    assert y.dtype == out_dtype and y.dtype.isnative
    assert y.shape == x.shape
    assert y.strides == np.empty_like(x, dtype=out_dtype).strides, f"{what}: not the input's memory order"
    assert y.flags.aligned and y.flags.writeable
    assert not np.shares_memory(x, y)
    assert_softmax_close(y, reference_softmax(x, dim), out_dtype, what=what)
    return y


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ndim", sorted(SHAPES))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_layout_dim_and_special_value_matches_reference_and_leaves_input_alone(dtype, ndim, layout, rng):
    shape = SHAPES[ndim]
    for variant in VARIANTS:
        x = make_layout(make_base(dtype, shape, variant, rng), layout)
        for dim in row_reduce_dims(ndim):
            check_softmax_of_layout(x, dim, f"{variant}, dim={dim}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_matches_reference_on_every_kernel_set(kernel_set, layout, rng):
    for dtype in FLOAT_DTYPES:
        for shape in [(9, 33), (4, 5, 6), (20, 3)]:
            x = make_layout(make_base(dtype, shape, "specials", rng), layout)
            for dim in row_reduce_dims(len(shape)):
                check_softmax_of_layout(x, dim, f"{kernel_set} {np.dtype(dtype).name} {shape} dim={dim}")


@pytest.mark.parametrize("layout", ["C", "F", "transposed", "strided", "reversed", "byteswapped", "misaligned",
                                    "broadcast", "everything"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.bool_], ids=lambda d: np.dtype(d).name)
def test_integer_and_bool_input_in_every_layout_becomes_float64(dtype, layout, rng):
    base = rng.integers(0, 2 if dtype is np.bool_ else 200, (4, 5, 3)).astype(dtype)
    if layout in ("byteswapped", "everything") and np.dtype(dtype).itemsize == 1:
        layout = "strided"  # one-byte types have no byte order
    x = make_layout(base, layout)
    for dim in row_reduce_dims(3):
        y = check_softmax_of_layout(x, dim, f"dim={dim}")
        assert y.dtype == np.float64


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_fortran_input_gives_fortran_output_and_c_input_gives_c_output(dtype, rng):
    for shape in [(3, 4), (5, 2, 3), (2, 3, 4, 5)]:
        c = (rng.standard_normal(shape)).astype(dtype)
        f = np.asfortranarray(c)
        for dim in row_reduce_dims(len(shape)):
            assert softmax(c, dim).flags.c_contiguous
            yf = softmax(f, dim)
            assert yf.flags.f_contiguous and not yf.flags.c_contiguous


def test_noncontiguous_input_gives_contiguous_output_in_the_input_axis_order(rng):
    x = rng.standard_normal((6, 8, 10))
    y = softmax(x[::2, 1::3, ::-1], 1)
    assert y.flags.c_contiguous
    t = x.transpose(2, 0, 1)[::-1, ::2]
    y = softmax(t, 2)
    assert y.strides == np.empty_like(t).strides
    assert not y.flags.c_contiguous  # follows the transposed memory order, not C


@pytest.mark.parametrize("offset", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_misaligned_views_at_every_byte_offset_work(dtype, offset, rng):
    base = (rng.standard_normal((6, 21)) * 4).astype(dtype)
    buf = np.zeros(base.nbytes + 16, dtype=np.uint8)
    x = buf[offset:offset + base.nbytes].view(dtype).reshape(base.shape)
    x[...] = base
    if offset % np.dtype(dtype).itemsize:
        assert not x.flags.aligned
    for dim in (0, 1, -1):
        check_softmax_of_layout(x, dim, f"offset {offset} dim={dim}")


def test_float32_view_at_byte_offset_one_of_a_uint8_buffer(rng):
    raw = rng.integers(0, 256, 4 * 30 + 1, dtype=np.uint8)
    x = raw[1:].view(np.float32)
    x[...] = rng.standard_normal(30).astype(np.float32)
    x = x.reshape(5, 6)
    assert not x.flags.aligned
    for dim in (0, 1):
        check_softmax_of_layout(x, dim, f"dim={dim}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_zero_strided_broadcast_input_along_and_across_the_reduction_axis(dtype, rng):
    row = (rng.standard_normal(7) * 3).astype(dtype)
    col = (rng.standard_normal((5, 1)) * 3).astype(dtype)
    for x in (np.broadcast_to(row, (5, 7)), np.broadcast_to(col, (5, 7)), np.broadcast_to(row, (2, 3, 7)),
              np.broadcast_to(dtype(1.5), (4, 3)), np.broadcast_to(row[:, None], (7, 4000))):
        assert 0 in x.strides
        for dim in row_reduce_dims(x.ndim):
            check_softmax_of_layout(x, dim, f"{x.shape} {x.strides} dim={dim}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_negative_strides_on_every_axis_combination(dtype, rng):
    base = (rng.standard_normal((4, 5, 6)) * 3).astype(dtype)
    for flips in range(1, 8):
        index = tuple(slice(None, None, -1) if flips >> k & 1 else slice(None) for k in range(3))
        x = base[index]
        for dim in row_reduce_dims(3):
            check_softmax_of_layout(x, dim, f"flips={flips:03b} dim={dim}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_long_rows_and_many_lanes_match_reference_in_every_layout(dtype, rng):
    # sizes that cross the driver's block sizes: gather blocks (1024), lane panels (4096), the cache budget
    for shape in [(3, 5000), (5000, 3), (2, 70001), (4097, 17), (1, 2049)]:
        base = (rng.standard_normal(shape) * 5).astype(dtype)
        for layout in ("C", "F", "strided", "byteswapped", "everything"):
            x = make_layout(base, layout)
            for dim in (0, 1):
                check_softmax_of_layout(x, dim, f"{shape} {layout} dim={dim}")


def softmax_with_bits_at_1_and_2_threads(x, dim, expect):
    """softmax(x, dim) on 1 and on 2 threads, each with the bits `expect`; returns the last result."""
    saved = csoftmax.get_num_threads()
    try:
        for threads in (1, 2):
            csoftmax.set_num_threads(threads)
            y = softmax(x, dim)
            np.testing.assert_array_equal(bits(y), expect, err_msg=f"{x.shape} dim {dim}, {threads} threads")
    finally:
        csoftmax.set_num_threads(saved)
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_lane_panels_beyond_the_store_budget_have_the_bits_of_rows(dtype, kernel_set, rng):
    # a lanes panel over 16 MiB computes its exponentials twice instead of storing them: the same bits as the
    # row kernels (and the reference), NaN / inf / -inf lanes included; on 2 threads the panels are half as wide
    # (the first axis length: both thread counts recompute; the second: 1 thread recomputes, 2 threads store)
    lanes = 4096
    for axis in ((17 << 20) // (2048 * np.dtype(dtype).itemsize) + 3, (12 << 20) // (2048 * np.dtype(dtype).itemsize)):
        x = (rng.standard_normal((axis, lanes)) * 4).astype(dtype)
        x[5, 7], x[axis - 1, 100], x[:, 300] = np.nan, np.inf, -np.inf
        x[: axis // 2, 301] = -np.inf
        expect = bits(softmax(np.ascontiguousarray(x.T), 1).T)
        y = softmax_with_bits_at_1_and_2_threads(x, 0, expect)
        good = np.ones(lanes, bool)
        good[[7, 100, 300]] = False
        assert np.isnan(y[:, ~good]).all()
        assert_softmax_close(y[:, good], reference_softmax(x[:, good], 0), dtype, what=f"{x.shape} dim 0")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("axis", [1, 2, 3, 4, 5, 37, 511, 512, 513])
def test_cache_sized_lane_panels_have_the_bits_of_rows(dtype, axis, kernel_set, rng):
    # axes of up to 512 steps whose strips stay in cache take the fused lanes kernel (groups of up to four vectors
    # of lanes, the last one partial; 1201 lanes: several tasks of whole panels); 1024 float32 lanes (a 4 KiB
    # stride) only up to 96 steps, and 513 steps never: the three-pass walk. Both give the rows' bits, NaN / inf /
    # -inf lanes included, on 1 and 2 threads; a lane of 512 equal values sums to exactly 512 (2^31 in the float32
    # kernel's 32-bit high part) and gives exactly 1/512
    for lanes in (3, 15, 16, 17, 63, 64, 65, 100, 130, 1024, 1201):
        x = (rng.standard_normal((3, axis, lanes)) * 4).astype(dtype)
        x[0, 0, lanes - 1] = np.nan
        x[1, axis - 1, 0] = np.inf
        x[2, :, lanes // 2] = -np.inf
        x[2, : (axis + 1) // 2, 1] = -np.inf
        x[1, :, lanes - 1] = 2.5
        expect = bits(softmax(np.ascontiguousarray(x.transpose(0, 2, 1)), 2).transpose(0, 2, 1))
        y = softmax_with_bits_at_1_and_2_threads(x, 1, expect)
        np.testing.assert_array_equal(y[1, :, lanes - 1], np.full(axis, 1 / axis, dtype))
        finite = y[0, :, : lanes - 1]
        assert_softmax_close(finite, reference_softmax(x[0, :, : lanes - 1], 0), dtype, what=f"{x.shape} dim 1")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_lanes_whose_least_value_is_at_the_far_limit_have_the_bits_of_rows(dtype, kernel_set, rng):
    # the fused lanes kernel drops the far lanes' check for a group of lanes whose every x - max is >= -64
    # (kernels.inc, near_only): a lane whose least x - max is just above, exactly at or just below -64, alone
    # among near lanes or in a group of its own, after a maximum that is not a round number
    axis, lanes = 37, 70
    x = rng.uniform(-20.0, 0.0, (6, axis, lanes)).astype(dtype)
    for b, top in enumerate(rng.uniform(-3.0, 3.0, 6).astype(dtype)):
        x[b, 0] = top
        on = (top - dtype(64)).astype(dtype)              # x - max rounds to exactly -64 or next to it
        for lane, value in ((b, on), (20 + b, np.nextafter(on, dtype(-np.inf))), (64 + b % 6, np.nextafter(on, top))):
            x[b, 1 + b, lane] = value
    x[5, 2:] = np.nextafter(x[5, 0] - dtype(64), dtype(-np.inf))  # every lane of the last slab: just below
    expect = bits(softmax(np.ascontiguousarray(x.transpose(0, 2, 1)), 2).transpose(0, 2, 1))
    y = softmax_with_bits_at_1_and_2_threads(x, 1, expect)
    assert_softmax_close(y, reference_softmax(x, 1), dtype, what=f"{x.shape} dim 1")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 10, 13, CSM_SHORT_ROW_MAX])
def test_short_rows_in_interleaved_groups_have_the_bits_of_single_rows(n, kernel_set, rng):
    # float32 rows of up to CSM_SHORT_ROW_MAX go 8 (AVX2) or 16 (AVX-512) at a time through in-register transposes,
    # several groups interleaved (short_rows_x86.inc): batches of groups, then single groups, then a remainder the
    # row kernels finish; specials in different groups of a batch stay in their rows. A row alone (no group) takes
    # the row kernels: the same bits, forward and backward, and in place. (log_softmax_backward's float64 sum of g
    # is taken in another order by each path, and g - exp(y) s can cancel: close there, not the same bits.)
    rows = 8 * 4 * 2 + 8 * 3 + 5
    x = (rng.standard_normal((rows, n)) * 5).astype(np.float32)
    x[8 * 1 + 2, 0] = np.nan
    x[8 * 2 + 7, n - 1] = -np.inf
    x[8 * 5, :] = -np.inf
    x[8 * 6 + 3, 0] = np.inf
    x[8 * 9 + 1, :] = 2.0
    g = rng.standard_normal((rows, n)).astype(np.float32)
    y = softmax(x, 1)
    assert_softmax_close(y, reference_softmax(x, 1), np.float32, what=f"({rows}, {n})")
    forward = [(f, (x,)) for f in (softmax, csoftmax.log_softmax, csoftmax.softmin)]
    backward = [(csoftmax.softmax_backward, (g, y)), (csoftmax.log_softmax_backward, (g, csoftmax.log_softmax(x, 1)))]
    for f, args in forward + backward:
        whole = f(*args, 1)
        for i in range(rows):
            alone = f(*(a[i : i + 1] for a in args), 1)[0]
            if f is csoftmax.log_softmax_backward:
                np.testing.assert_allclose(whole[i], alone, rtol=1e-5, atol=1e-6, err_msg=f"row {i}")
            else:
                np.testing.assert_array_equal(bits(whole[i]), bits(alone), err_msg=f"{f.__name__} row {i}")
        if len(args) == 1:
            inplace = x.copy()
            f(inplace, 1, out=inplace)
            np.testing.assert_array_equal(bits(inplace), bits(whole), err_msg=f"{f.__name__} in place")


@pytest.mark.parametrize("n", sorted({1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33,
                                       CSM_SHORT_ROW_MAX - 1, CSM_SHORT_ROW_MAX, CSM_SHORT_ROW_MAX + 1}))
def test_row_lengths_and_row_counts_around_vector_widths_and_the_short_row_limit_match_reference(n, kernel_set, rng):
    for dtype in FLOAT_DTYPES:
        for rows in (1, 3, 8, 13, 16, 17, 35):  # whole vector-width groups of rows and remainders
            base = make_base(dtype, (rows, n), "specials", rng)
            for layout in ("C", "F", "misaligned"):
                x = make_layout(base, layout)
                check_softmax_of_layout(x, 1, f"{np.dtype(dtype).name} ({rows}, {n}) {layout}")
                check_softmax_of_layout(x, 0, f"{np.dtype(dtype).name} ({rows}, {n}) {layout} dim 0")


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 16, 17, 31, 32, 33, 64, 65, 1000])
def test_every_other_element_views_at_both_phases_match_reference(n, kernel_set, rng):
    # [..., ::2] rows are loaded two vectors at a time; [..., 1::2] of the last row ends at the buffer's last element,
    # so a load past the row would leave the buffer (the sanitizer run of the suite sees that)
    for dtype in (np.float32, np.float64):
        base = make_base(dtype, (5, 2 * n), "finite", rng)
        for phase in (0, 1):
            x = base[:, phase::2]
            for dim in (1, 0):
                check_softmax_of_layout(x, dim, f"{np.dtype(dtype).name} [:, {phase}::2] n={n} dim={dim}")


@pytest.mark.parametrize("n", [7, 100, 512, 1000, 1024, 1025, 3000])
def test_rows_gathered_in_blocks_have_the_bits_of_contiguous_rows(n, kernel_set, rng):
    # the general path (byte-swapped, misaligned, strided, float16, strided out=) gathers short rows a block at a
    # time into one buffer: row counts around the block size (16 KB of rows) must give the contiguous rows' bits
    for dtype in (np.float32, np.float64):
        for rows in sorted({1, 3, 4, 5, 9, 16384 // (n * np.dtype(dtype).itemsize) + 1, 41}):
            base = make_base(dtype, (rows, n), "specials", rng)
            expect = bits(softmax(base, 1))
            strided_out = np.empty((rows, 2 * n), dtype)[:, ::2]
            got = {
                "byte-swapped": softmax(base.astype(base.dtype.newbyteorder("S")), 1),
                "misaligned": softmax(make_layout(base, "misaligned"), 1),
                "[:, ::2]": softmax(np.repeat(base, 2, axis=1)[:, ::2], 1),
                "strided out=": softmax(base, 1, out=strided_out),
            }
            for what, y in got.items():
                np.testing.assert_array_equal(bits(y), expect, err_msg=f"{np.dtype(dtype).name} ({rows}, {n}) {what}")
    for rows in (1, 2, 3, 5, 6, 7, 37):  # float16 rows go four at a time, the spare slots repeating the last row
        half = make_base(np.float16, (rows, n), "specials", rng)
        wide = half.astype(np.float32)
        want = bits(softmax(wide, 1).astype(np.float16))
        got = {  # the fused float16 kernel, and the gathered path next to it
            "C": softmax(half, 1),
            "F": softmax(np.asfortranarray(half), 1),
            "byte-swapped": softmax(half.astype(half.dtype.newbyteorder("S")), 1),
        }
        for what, y in got.items():
            np.testing.assert_array_equal(bits(y), want, err_msg=f"float16 ({rows}, {n}) {what}")
        np.testing.assert_array_equal(bits(softmin(half, 1)), bits(softmin(wide, 1).astype(np.float16)),
                                      err_msg=f"float16 softmin ({rows}, {n})")
        np.testing.assert_array_equal(bits(softmax(half, 1, dtype=np.float32)), bits(softmax(wide, 1)),
                                      err_msg=f"float16 dtype=float32 ({rows}, {n})")


@pytest.mark.parametrize("n", [767, 768, 769, 1000, 1001, 1023, 4097, 8192])
def test_rows_whose_outputs_start_mid_cache_line_have_the_bits_of_aligned_rows(n, kernel_set, rng):
    # float32 row groups of 768+ elements split each row where its output is vector-aligned (kernels.inc): every
    # output offset within a cache line, rows of different offsets in one group, and NaN / -inf rows among them
    # must give the bits of the same rows written aligned
    base = make_base(np.float32, (9, n), "specials", rng)
    base[4] = np.nan if n % 2 else -np.inf
    aligned = np.empty((9, -(-n // 16) * 16 + 16), np.float32)
    start = (-aligned.ctypes.data % 64) // 4
    want = softmax(base, 1, out=aligned[:, start:start + n])
    assert want.ctypes.data % 64 == 0 and want.strides[0] % 64 == 0
    for offset in range(1, 16):
        buf = np.empty(9 * n + 32, np.float32)
        first = (-buf.ctypes.data % 64) // 4 + offset
        out = buf[first:first + 9 * n].reshape(9, n)
        np.testing.assert_array_equal(bits(softmax(base, 1, out=out)), bits(want), err_msg=f"n={n} offset={offset}")
        np.testing.assert_array_equal(bits(softmax(base[:, ::-1].copy(), 1)[:, ::-1]), bits(want),
                                      err_msg=f"n={n} reversed rows")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [3, 16, 40, 300])
def test_nan_in_one_row_of_a_group_of_rows_leaves_its_neighbours_exact(kernel_set, dtype, n, rng):
    # rows are computed several at a time: a NaN in one of them must not reach the others
    for bad_row in (0, 2, 5, 8):
        base = make_base(dtype, (9, n), "finite", rng)
        base[bad_row, n // 2] = np.nan
        y = softmax(base, 1)
        assert np.isnan(y[bad_row]).all()
        good = [r for r in range(9) if r != bad_row]
        assert_softmax_close(y[good], reference_softmax(base[good], 1), dtype, what=f"NaN in row {bad_row}")


@pytest.mark.parametrize("func", [softmax, log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("n", [3, 16, 20, 40])
def test_rows_that_are_nan_have_the_same_bits_on_every_path(kernel_set, n, func, rng):
    # rows of a NaN result (NaN, +inf, all -inf) computed in groups of rows, alone, as lanes, through the general
    # path and into a strided out=: a NaN combined with a NaN takes either's bits, so every path writes one NaN
    for dtype in (np.float32, np.float64):
        base = make_base(dtype, (11, n), "finite", rng)
        base[1, n // 2], base[4, 0], base[9] = np.nan, np.inf, -np.inf
        base[6, 1 % n], base[6, n - 1] = np.inf, -np.inf
        expect = bits(func(base, 1))
        assert np.isnan(func(base, 1)[[1, 4, 6, 9]]).all()
        strided_out = np.empty((22, 2 * n), dtype)[::2, ::2]
        got = {
            "rows one by one": np.concatenate([bits(func(base[r:r + 1], 1)) for r in range(11)]),
            "lanes": bits(func(np.ascontiguousarray(base.T), 0).T),
            "general (byte-swapped)": bits(func(base.astype(base.dtype.newbyteorder("S")), 1)),
            "strided out=": bits(func(base, 1, out=strided_out)),
        }
        for what, b in got.items():
            np.testing.assert_array_equal(b, expect, err_msg=f"{func.__name__} {np.dtype(dtype).name} n={n}: {what}")


def test_arrays_of_8_16_and_32_dimensions_in_reversed_memory_order_work(rng):
    for ndim in (8, 16, 32):
        shape = [1] * ndim
        shape[ndim // 3], shape[ndim // 2], shape[-1] = 2, 3, 2
        x = rng.standard_normal(shape)
        x = x.transpose(list(range(ndim))[::-1])
        for dim in (0, ndim // 2, -1, -ndim):
            check_softmax_of_layout(x, dim, f"ndim={ndim} dim={dim}")


# ------------------------------------------------------------------------------------------------- IEEE rules


def _rule_arrays(dtype, row, other):
    """A 2-d array whose row 1 is `row`; the other rows are ordinary."""
    row = np.asarray(row, dtype=dtype)
    base = np.array([other, row, other[::-1]], dtype=dtype)
    return {name: make_layout(base, name) for name in SAME_VALUE_LAYOUTS}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1, 5, 16, 40])
def test_nan_in_a_row_makes_that_row_nan(kernel_set, dtype, n):
    other = np.linspace(-2, 2, n)
    for pos in sorted({0, n // 2, n - 1}):
        row = np.linspace(1, 3, n)
        row[pos] = np.nan
        for layout, x in _rule_arrays(dtype, row, other).items():
            y = softmax(x, 1)
            assert np.isnan(y[1]).all(), f"{layout}, NaN at {pos}: {y[1]}"
            assert not np.isnan(y[0]).any() and not np.isnan(y[2]).any()
            assert_softmax_close(y[[0, 2]], reference_softmax(np.array(x)[[0, 2]], 1), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1, 5, 16, 40])
def test_positive_inf_in_a_row_makes_that_row_nan(kernel_set, dtype, n):
    other = np.linspace(-2, 2, n)
    for pos in sorted({0, n // 2, n - 1}):
        row = np.linspace(1, 3, n)
        row[pos] = np.inf
        for layout, x in _rule_arrays(dtype, row, other).items():
            y = softmax(x, 1)
            assert np.isnan(y[1]).all(), f"{layout}, +inf at {pos}: {y[1]}"
            assert not np.isnan(y[[0, 2]]).any()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1, 5, 16, 40])
def test_all_neg_inf_row_is_nan(kernel_set, dtype, n):
    other = np.linspace(-2, 2, n)
    for layout, x in _rule_arrays(dtype, np.full(n, -np.inf), other).items():
        y = softmax(x, 1)
        assert np.isnan(y[1]).all(), f"{layout}: {y[1]}"
        assert not np.isnan(y[[0, 2]]).any()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [2, 5, 16, 40])
def test_partial_neg_inf_entries_give_exact_zero_and_the_rest_is_softmax_of_the_finite_part(kernel_set, dtype, n):
    other = np.linspace(-2, 2, n)
    row = np.linspace(1, 3, n)
    row[::2] = -np.inf
    finite = ~np.isinf(row)
    for layout, x in _rule_arrays(dtype, row, other).items():
        y = softmax(x, 1)
        assert (y[1][~finite] == 0).all(), layout
        assert_softmax_close(y[1][finite], reference_softmax(row[finite].astype(dtype), 0), dtype, what=layout)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_nan_together_with_inf_in_a_row_is_nan(kernel_set, dtype):
    for row in ([np.nan, np.inf, 1.0], [-np.inf, np.nan, -np.inf], [np.inf, -np.inf, np.inf], [np.inf, np.inf, 0.0]):
        for layout, x in _rule_arrays(dtype, row, np.array([0.0, 1.0, 2.0])).items():
            assert np.isnan(softmax(x, 1)[1]).all(), (layout, row)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_huge_finite_values_use_max_subtraction(kernel_set, dtype):
    big = np.finfo(dtype).max
    for layout, x in _rule_arrays(dtype, [big, -big, big * 0.5], np.array([0.0, 1.0, 2.0])).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = softmax(x, 1)
        np.testing.assert_array_equal(y[1], np.array([1.0, 0.0, 0.0], dtype=dtype), err_msg=layout)
    for layout, x in _rule_arrays(dtype, [big, big, -big], np.array([0.0, 1.0, 2.0])).items():
        np.testing.assert_array_equal(softmax(x, 1)[1], np.array([0.5, 0.5, 0.0], dtype=dtype), err_msg=layout)


def test_float32_plus_minus_3e38_gives_one_and_zero(kernel_set):
    x = np.array([3e38, -3e38], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = softmax(x, 0)
    np.testing.assert_array_equal(y, np.array([1.0, 0.0], dtype=np.float32))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_no_runtime_warning_for_any_special_value_combination(kernel_set, dtype, rng):
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, np.finfo(dtype).max, -np.finfo(dtype).max,
                       np.finfo(dtype).tiny, np.finfo(dtype).smallest_subnormal], dtype=dtype)
    x = rng.choice(values, (200, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dim in (0, 1):
            for layout in ("C", "F", "everything"):
                xl = make_layout(x, layout)
                assert_softmax_close(softmax(xl, dim), reference_softmax(x, dim), dtype, what=f"{layout} dim={dim}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_negative_zero_and_positive_zero_are_equal_inputs(dtype):
    y = softmax(np.array([0.0, -0.0], dtype=dtype), 0)
    np.testing.assert_array_equal(y, np.array([0.5, 0.5], dtype=dtype))
    assert not np.signbit(y).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_short_rows_with_row_strides_beyond_32_bit_gather_offsets(dtype, kernel_set, rng):
    # rows of <= 32 elements far apart in memory (16 * stride around 2^31 bytes): vector gathers with 32-bit
    # offsets cannot reach them all. np.zeros maps the buffer lazily, so only the touched pages cost memory
    # (and nothing here may read the whole buffer).
    itemsize = np.dtype(dtype).itemsize
    for row_bytes in ((1 << 27) - 64, (1 << 27) + 64):
        buf = np.zeros((17, row_bytes // itemsize), dtype=dtype)
        for n in (3, 8, 16, 31):
            x = buf[:, :n]
            x[...] = (rng.standard_normal((17, n)) * 4).astype(dtype)
            for view in (x, x[::-1], x[1:]):
                before = view.copy()
                y = softmax(view, 1)
                np.testing.assert_array_equal(view, before)
                assert y.flags.c_contiguous
                what = f"row stride {view.strides[0]} n={n}"
                assert_softmax_close(y, reference_softmax(before, 1), dtype, what=what)
                np.testing.assert_array_equal(y, softmax(before, 1), err_msg=what)
        del buf
