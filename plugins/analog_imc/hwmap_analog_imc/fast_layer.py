"""The fast exact kernel of a crossbar layer (noise off): the same bits as the per-plane,
per-column arithmetic of :mod:`~hwmap_analog_imc.crossbar`, reordered for speed.

How it is computed. Everything in steps 2–4 there (crossbar, ADC, shift and add) is
integer arithmetic, and integer sums held in floats are exact, in any order, while every
partial sum stays below 2^24 (float32) or 2^53 (float64); :class:`FastLayer` checks those
bounds for each layer when the program is loaded and, where they hold, reorders the work for
speed without changing one bit of the result:

* a column ``j`` of a block whose ADC provably neither rounds nor clips (every active plane
  has shift 0 and ``max digit × Σ_r G[r, j] ≤ 2^adc_bits − 1``) is *transparent*: its planes
  add up to ``u``, so all transparent columns, the ``xsum`` correction and the ACCUM offsets
  of a layer fold into one integer weight matrix and one GEMM on the codes ``u``;
* the other (*rounding*) columns of the blocks that share word lines are one GEMM on the
  digit planes; ``k`` planes are packed into one float (``d_p + 2^b·d_q + ...``, ``2^b`` above
  any column sum, ``b·k ≤ 24``) and split again exactly after the GEMM (floor of a power-of-
  two scaling, and a subtraction), which divides the GEMM's work by ``k``; the ADC and the
  shift-and-add then run on cache-sized chunks of the column sums;
* the im2col unrolling is one gather with an index plan made at load time (a 1×1
  convolution and a Gemm / MatMul need none: BLAS takes their input as it is), and the DAC
  activity comes from per-input-element digit counts and the multiplicity of each element
  in each READ.

What remains is arithmetic: ``planes/k`` GEMM rows per input vector on every rounding
column, against one multiply-add per weight for a float runtime (:meth:`~hwmap_analog_imc.simulator.Simulator.work`
counts both; ``bench/analog_imc.py`` prints them).

That numpy path is the reference of the *folded* kernel (:mod:`~hwmap_analog_imc.fold_kernel`,
compiled with numba), which :meth:`FastLayer.run` takes wherever it applies (1-bit DAC
digits, at most 8 planes, shifts at most 8, no conversion that could clip): every column
folded into one GEMM at the model's MACs, and the rounding as a low-bit correction, the
same bits (:meth:`FastLayer.run_numpy` runs the numpy path).

The layout (block sets, segments, rounding units, the input's index plan and the DAC
activity plan) and the proof of those bounds are made once, at load, by
:class:`~hwmap_analog_imc.fast_plan.FastPlan`; :class:`FastLayer` runs them.

A layer whose bounds do not hold (and every layer with device noise on) runs the
straightforward per-block kernel instead (:class:`~hwmap_analog_imc.crossbar.LayerKernel`).
"""

from __future__ import annotations

import numpy as np

from . import fold_kernel
from .crossbar import ScheduleIndex
from .fast_plan import FastPlan, NotExact, Tuning, Unit
from .program import Program

__all__ = ["FastLayer", "NotExact", "Tuning"]


class FastLayer(FastPlan):
    """One crossbar layer prepared for exact, reordered execution (noise off; see the module
    docstring, "How it is computed"; the preparation is :class:`~hwmap_analog_imc.fast_plan.FastPlan`).
    Raises :class:`NotExact` at construction when an integer bound fails; the simulator then
    uses the reference kernel."""

    def __init__(self, program: Program, layer_id: int, index: ScheduleIndex | None = None,
                 tuning: Tuning = Tuning()) -> None:
        super().__init__(program, layer_id, index, tuning)
        #: the folded kernel (:mod:`~hwmap_analog_imc.fold_kernel`) where it applies, else None
        self.fold = fold_kernel.fold_plan(self)

    def work(self) -> tuple[int, int]:
        """Multiply-adds per sample of the exact GEMMs and of the rounding GEMMs."""
        if self.fold is not None:
            return self.fold.work(self)
        rec = self.rec
        exact = sum(rec.groups * (s.pos.stop - s.pos.start) * rec.rows * rec.filters for s in self.segments)
        rounding = sum(self.rows_packed * u.levels.shape[0] * (u.pos.stop - u.pos.start) * u.levels.shape[1]
                       * u.levels.shape[2] for u in self.units)
        return exact, rounding

    # -- execution
    def run(self, x: np.ndarray, codes: np.ndarray | None = None) -> tuple[np.ndarray, int, np.ndarray]:
        """Integer accumulations ``(N, G, positions, filters)`` of input ``x``, the number of
        ADC conversions that clipped, and the nonzero digits each READ drove: through the
        folded kernel where the layer has one (it never clips; ``codes``, the DAC codes of
        ``x`` when the layer that made it handed them over, see
        :meth:`~hwmap_analog_imc.fold_kernel.FoldPlan.run`), else :meth:`run_numpy`."""
        if self.fold is not None:
            out = self.fold.run(self, x, codes)
            if out is not None:
                return out[0].transpose(0, 1, 3, 2), 0, out[1]
        return self.run_numpy(x)

    def dequantize(self, acc: np.ndarray) -> np.ndarray:
        """As :meth:`LayerBase.dequantize`, in one compiled pass for the folded kernel's
        filter-major accumulations of a convolution."""
        f_major = acc.transpose(0, 1, 3, 2)
        if self.fold is None or not self.rec.kernel or not f_major.flags.c_contiguous:
            return super().dequantize(acc)
        y = fold_kernel.dequantize_f_major(f_major, self.scale, self.bias)
        return y.reshape(acc.shape[0], -1, *self.out_shape)

    def run_numpy(self, x: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """As :meth:`run`, through the numpy path (the reference of the folded kernel)."""
        rec = self.rec
        n = x.shape[0]
        # the DAC codes clip(round(x/s) + z, q_min, q_max) − q_min, as clip(round(x/s),
        # q_min − z, q_max − z) + (z − q_min): the same integers, one pass fewer
        t = np.divide(x, rec.in_scale, dtype=np.float64).reshape(n, rec.groups, self.group_size)
        np.rint(t, out=t)
        np.clip(t, rec.in_qmin - rec.in_zero_point, rec.in_qmax - rec.in_zero_point, out=t)
        codes = np.empty(t.shape, dtype=np.intp)
        np.add(t, self.pad_code, out=codes, casting="unsafe")
        # (a NaN has no code: its garbage index is clamped by the table look-ups, as the
        # reference kernel turns it into garbage digits; graph inputs are checked for NaN)
        counts = self._digit_counts(codes)
        ops = self._operands(t, codes)
        acc = self._exact(ops[0])
        clipped = 0
        for unit in self.units:
            clipped += self._rounding(unit, ops, acc)
        return acc, clipped, counts

    def _operands(self, t: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``(1 + J, N, G, positions, rows)``: the input vectors' codes and packed digit
        planes (a view of the input for ``direct`` and ``transpose``, else gathered)."""
        rec = self.rec
        n, g, size = t.shape
        rows = 1 + self.rows_packed
        if self.mode == "gather":  # one channel per row, then its padding slot
            assert self.idx is not None
            table = np.empty((rows, n, g, self.channels, size // self.channels + 1), dtype=self.gemm_dtype)
            np.add(t.reshape(n, g, self.channels, -1), self.pad_code, out=table[0, ..., :-1])
            table[0, ..., -1] = self.pad_code
            if self.rows_packed:
                per_channel = codes.reshape(n, g, self.channels, -1)
                table[1:, ..., :-1] = np.take(self.lut, per_channel, axis=1, mode="clip")
                table[1:, ..., -1] = self.lut[:, self.pad_code, None, None, None]
            return np.take(table.reshape(rows, n, g, -1), self.idx, axis=3)
        table = np.empty((rows, n, g, size), dtype=self.gemm_dtype)
        np.add(t, self.pad_code, out=table[0])
        if self.rows_packed:
            table[1:] = np.take(self.lut, codes, axis=1, mode="clip")
        if self.mode == "transpose":
            return table.reshape(-1, n, g, rec.rows, rec.positions).swapaxes(3, 4)
        return table.reshape(-1, n, g, rec.positions, rec.rows)

    def _exact(self, u: np.ndarray) -> np.ndarray:
        """The transparent columns and xsum corrections (one GEMM per segment of positions)
        plus the ACCUM offsets."""
        rec = self.rec
        n, g, p, rows = u.shape
        if u.dtype != self.exact_dtype:
            u = u.astype(self.exact_dtype)
        if len(self.segments) == 1 and not self.units:
            s = self.segments[0]
            y = np.matmul(u[0, 0], s.weights[0])[None, None] if n == 1 and g == 1 else np.matmul(u, s.weights)
            y += s.offsets
            return y
        acc = np.empty((n, g, p, rec.filters), dtype=np.float64)
        for s in self.segments:
            if n == 1 and g == 1 and s.pos == slice(0, p):
                acc[0, 0] = np.matmul(u[0, 0], s.weights[0])
            else:
                acc[:, :, s.pos] = np.matmul(u[:, :, s.pos], s.weights)
            acc[:, :, s.pos] += s.offsets
        return acc

    def _rounding(self, unit: Unit, ops: np.ndarray, acc: np.ndarray) -> int:
        """Add one unit's rounding columns to ``acc``: GEMMs on the packed planes, then the
        ADC work in chunks whose plane arrays stay cache-sized (the GEMM runs per chunk of
        positions too when chunks keep at least ``tuning.chunk_gemm_rows`` positions, so its
        output is still in cache). Returns the conversions that clipped."""
        d = ops[1:, :, unit.groups, unit.pos, unit.rows]  # (J, N, G_u, pc, rc)
        rows, n, gu, pc, rc = d.shape
        per_pos = self.k * rows * n * gu * unit.levels.shape[2]  # plane-array elements per position
        pcc = -(-pc // -(-per_pos * pc // self.tuning.chunk))  # even chunks of at most tuning.chunk elements
        clipped = 0
        if pcc < pc and pcc >= self.tuning.chunk_gemm_rows:
            for a in range(0, pc, pcc):
                clipped += self._convert(unit, np.matmul(d[..., a:a + pcc, :], unit.levels), a, acc)
            return clipped
        if gu == 1 and n == 1 and self.mode != "transpose" and ops.shape[2] == 1 and pc == ops.shape[3]:
            sums = np.matmul(d.reshape(rows * pc, rc), unit.levels[0]).reshape(rows, 1, 1, pc, -1)  # one GEMM
        else:
            sums = np.matmul(d, unit.levels)  # (J, N, G_u, pc, r·F_u)
        for a in range(0, pc, pcc):
            clipped += self._convert(unit, sums[..., a:a + pcc, :], a, acc)
        return clipped

    def _convert(self, unit: Unit, sums: np.ndarray, a: int, acc: np.ndarray) -> int:
        """The column sums ``(J, N, G_u, p, r·F_u)`` of a unit's positions ``a..a+p``, in
        chunks of filters: unpack the planes, convert (ADC), shift and add over planes and
        slices into ``acc``. Returns the conversions that clipped."""
        k, rows = self.k, self.rows_packed
        r = unit.fac.shape[2]
        _, n, gu, p, cols = sums.shape
        nf = cols // r
        sums = sums.reshape(rows, n, gu, p, r, nf)
        fcc = -(-nf // -(-k * rows * n * gu * p * cols // self.tuning.chunk))
        clipped = 0
        for f0 in range(0, nf, fcc):
            f1 = min(f0 + fcc, nf)
            planes = self._unpack(sums[..., f0:f1])  # (k, J, N, G_u, p, r, f)
            planes *= unit.inv if isinstance(unit.inv, float) else unit.inv[..., f0:f1]  # the ADC ...
            planes += 0.5
            np.floor(planes, out=planes)  # ... floor(S/2^shift + 1/2) ...
            if unit.can_clip and planes.max(initial=0.0) > self.amax:  # ... clipped at 2^adc_bits − 1
                clipped += int(np.count_nonzero(planes > self.amax))
                np.minimum(planes, self.amax, out=planes)
            if unit.weight is None:  # Σ_p 2^(p·dac)·code_p; the shift is in fac
                wsum = np.matmul(unit.plane_w, planes.reshape(k * rows, -1)).reshape(planes.shape[2:])
            else:
                planes *= unit.weight[..., f0:f1]
                wsum = planes.sum(axis=(0, 1), dtype=np.float64 if unit.wide_sum else None)
            fac = unit.fac[..., f0:f1]
            y = np.multiply(wsum[..., 0, :], fac[:, :, 0], dtype=np.float64)
            for j in range(1, r):
                y += wsum[..., j, :] * fac[:, :, j]
            filters = (slice(unit.filters.start + f0, unit.filters.start + f1)
                       if isinstance(unit.filters, slice) else unit.filters[f0:f1])
            acc[:, unit.groups, unit.pos.start + a:unit.pos.start + a + p, filters] += y
        return clipped

    def _unpack(self, sums: np.ndarray) -> np.ndarray:
        """The ``k`` planes packed in each of ``sums``: plane i = floor(rest / 2^(b·i)),
        rest −= that·2^(b·i) (exact: integers and powers of two; np.divmod gives the same
        numbers through a much slower fmod). ``(k,) + sums.shape`` in the ADC's type."""
        k = self.k
        if k == 1:
            return sums[None].astype(self.adc_dtype, copy=False)  # a view: sums is not needed after
        planes: np.ndarray = np.empty((k,) + sums.shape, dtype=self.adc_dtype)
        rest = sums
        for i in range(k - 1, 0, -1):
            step = float(2 ** (self.bits * i))
            np.multiply(rest, 1.0 / step, out=planes[i])
            np.floor(planes[i], out=planes[i])
            # planes[0] holds the rest after the first step: then a temporary is needed
            low = np.multiply(planes[i], -step, out=None if i < k - 1 else planes[0])
            np.add(rest, low, out=planes[0])
            rest = planes[0]
        return planes

    def _digit_counts(self, codes: np.ndarray) -> np.ndarray:
        """Nonzero digits each READ drives: digit counts of the input codes weighted by how
        often each element appears in the READ's rows and positions (exact integers)."""
        n = codes.shape[0]
        pcs = np.take(self.nzlut, codes, mode="clip")  # (N, G, size)
        pad = n * float(self.nzlut[self.pad_code])
        per_geom = np.empty((len(self.geoms), self.rec.groups), dtype=np.float64)
        for i, (elems, mult, pad_mult) in enumerate(self.geoms):
            sub = pcs if elems is None else pcs[:, :, elems]
            per_geom[i] = np.matmul(sub, mult).sum(axis=0) + pad * pad_mult
        return per_geom[self.read_geom, self.read_group].astype(np.int64)
