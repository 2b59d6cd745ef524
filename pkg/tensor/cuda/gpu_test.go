//go:build gpu

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// These tests need an NVIDIA GPU and run with -tags gpu (make gpu-bundle
// builds them; scripts/gpu/run.sh runs them). Each kernel is compared with
// tensor.CPU on random inputs. Tolerances are relative to the largest
// magnitude of the reference (maxRel below) and chosen from the arithmetic:
//
//   - data movement (Copy, Zero, GatherColumns, embedding, Scale): exact, or
//     one rounding;
//   - elementwise math (SwiGLU, RoPE, AdamW): 1e-5 — the CPU's exp32 and
//     CUDA's expf each err by a few ulp (1 ulp ≈ 6e-8);
//   - row reductions (RMSNorm, cross-entropy) of up to a few thousand
//     terms, summed in another order: 1e-5;
//   - attention (dot products of width hd, softmax over T keys, sums over T
//     rows in backward): 1e-4;
//   - Gemm: FP32 1e-5 (K ≤ 1024 terms); TF32 rounds inputs to 11
//     significant bits (2⁻¹¹ ≈ 5e-4 relative per input): 5e-3; BF16 to 8
//     bits (2⁻⁸ ≈ 4e-3): 3e-2, against a float64 reference.

var gpu *Device

func TestMain(m *testing.M) {
	var err error
	gpu, err = New(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cuda device:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := gpu.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		code = 1
	}
	os.Exit(code)
}

// upload copies host values into a fresh device buffer.
func upload(d *Device, x []float32) []float32 {
	y := d.Alloc(len(x))
	copy(y, x)
	return y
}

func randn(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	return x
}

// maxRel is max|got−want| / max(max|want|, tiny).
func maxRel(got, want []float32) float64 {
	var diff, ref float64
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i])-float64(want[i])))
		ref = math.Max(ref, math.Abs(float64(want[i])))
	}
	return diff / math.Max(ref, 1e-30)
}

func expectClose(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) < len(want) {
		t.Fatalf("%s: %d elements, want %d", what, len(got), len(want))
	}
	for i, v := range got[:len(want)] {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("%s: [%d] = %v", what, i, v)
		}
	}
	if e := maxRel(got[:len(want)], want); e > tol {
		t.Errorf("%s: relative error %.3g > %.1g", what, e, tol)
	} else {
		t.Logf("%s: relative error %.3g (limit %.1g)", what, e, tol)
	}
}

func TestGPUInfo(t *testing.T) {
	in := gpu.Info()
	t.Logf("GPU %s, compute capability %d.%d, %d SMs, %d MiB free of %d", in.GPU, in.Major, in.Minor, in.SMs, in.FreeBytes>>20, in.TotalBytes>>20)
	t.Logf("driver API %d, NVRTC %d.%d, cuBLAS %d", in.Libs.DriverVersion, in.Libs.NVRTCVersion[0], in.Libs.NVRTCVersion[1], in.CuBLASVersion)
	t.Logf("loaded %s, %s, %s", in.Libs.Driver, in.Libs.NVRTC, in.Libs.CuBLAS)
	if in.GPU == "" || in.Major == 0 {
		t.Error("device reports no name or compute capability")
	}
}

func TestGPUAllocZeroedAndOwned(t *testing.T) {
	x := gpu.Alloc(1000)
	for i, v := range x {
		if v != 0 {
			t.Fatalf("Alloc: [%d] = %v", i, v)
		}
	}
	if msg := panics(func() { gpu.Scale(2, make([]float32, 10)) }); !strings.Contains(msg, "not memory of this device") {
		t.Errorf("Go heap slice given to a kernel: %q", msg)
	}
	if msg := panics(func() { gpu.Copy(x[:3], x[3:5]) }); !strings.Contains(msg, "lengths") {
		t.Errorf("Copy of unequal lengths: %q", msg)
	}
}

func gemmRef(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) []float32 {
	out := append([]float32(nil), c...)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			out[i*ldc+j] = float32(float64(alpha)*s + float64(beta)*float64(c[i*ldc+j]))
		}
	}
	return out
}

func roundBF16(x []float32) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = tensor.ToBF16(v).Float32()
	}
	return y
}

func TestGPUGemm(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	devs := []struct {
		p   Precision
		tol float64
	}{{FP32, 1e-5}, {TF32, 5e-3}, {BF16, 3e-2}}
	for _, dc := range devs {
		d := gpu
		if dc.p != FP32 {
			var err error
			if d, err = New(Options{Precision: dc.p}); err != nil {
				t.Fatal(err)
			}
		}
		for _, sh := range [][3]int{{257, 129, 191}, {64, 768, 768}, {5, 3, 1024}} {
			for _, ta := range []bool{false, true} {
				for _, tb := range []bool{false, true} {
					m, n, k := sh[0], sh[1], sh[2]
					lda, ldb, ldc := k, n, n+3
					if ta {
						lda = m
					}
					if tb {
						ldb = k
					}
					rowsA, rowsB := m, k
					if ta {
						rowsA = k
					}
					if tb {
						rowsB = n
					}
					a, b, c := randn(r, rowsA*lda, 1), randn(r, rowsB*ldb, 1), randn(r, m*ldc, 1)
					want := gemmRef(ta, tb, m, n, k, 0.5, a, lda, b, ldb, 0.25, c, ldc)
					da, db, dcm := upload(d, a), upload(d, b), upload(d, c)
					d.Gemm(ta, tb, m, n, k, 0.5, da, lda, db, ldb, 0.25, dcm, ldc)
					d.Sync()
					expectClose(t, fmt.Sprintf("%s Gemm %v tA=%v tB=%v", dc.p, sh, ta, tb), dcm, want, dc.tol)
					if dc.p == BF16 {
						// Against operands rounded to bfloat16 on the host, only
						// the float32 accumulation order differs.
						want := gemmRef(ta, tb, m, n, k, 0.5, roundBF16(a), lda, roundBF16(b), ldb, 0.25, c, ldc)
						expectClose(t, fmt.Sprintf("bf16 Gemm %v tA=%v tB=%v vs rounded inputs", sh, ta, tb), dcm, want, 1e-5)
					}
				}
			}
		}
		if d != gpu {
			if err := d.Close(); err != nil {
				t.Error(err)
			}
		}
	}
}

func TestGPUVectors(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	cpu := tensor.CPU{}
	n := 1<<20 + 77
	x := randn(r, n, 1)
	dx := upload(gpu, x)
	want := 0.0
	for _, v := range x {
		want += float64(v) * float64(v)
	}
	got := gpu.SumSquares(dx)
	if math.Abs(got-want)/want > 1e-12 {
		t.Errorf("SumSquares = %.17g, want %.17g", got, want)
	}
	if again := gpu.SumSquares(dx); again != got {
		t.Errorf("SumSquares not repeatable: %v then %v", got, again)
	}
	gpu.Scale(-1.5, dx)
	cx := append([]float32(nil), x...)
	cpu.Scale(-1.5, cx)
	dy := gpu.Alloc(n)
	gpu.Copy(dy, dx)
	gpu.Zero(dx[:100])
	gpu.Sync()
	for i := range cx {
		if dy[i] != cx[i] {
			t.Fatalf("Scale then Copy: [%d] = %v, want %v", i, dy[i], cx[i])
		}
	}
	for i := 0; i < 100; i++ {
		if dx[i] != 0 {
			t.Fatalf("Zero: [%d] = %v", i, dx[i])
		}
	}
	const rows, srcCols = 300, 17
	src := randn(r, rows*srcCols, 1)
	cols := []int32{16, 0, 3, 3, 9}
	wantG := make([]float32, rows*len(cols))
	cpu.GatherColumns(wantG, src, rows, srcCols, cols)
	g := gpu.Alloc(len(wantG))
	gpu.GatherColumns(g, upload(gpu, src), rows, srcCols, cols)
	cols[0] = 1 // the device copied cols when called
	gpu.Sync()
	expectClose(t, "GatherColumns", g, wantG, 0)
}

func TestGPUEmbedding(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	cpu := tensor.CPU{}
	const vocab, d, lo, hi = 300, 96, 40, 250
	tokens := make([]int32, 777)
	for i := range tokens {
		tokens[i] = int32(r.IntN(vocab))
	}
	tokens[0], tokens[1] = 41, 41 // repeats
	w := randn(r, (hi-lo)*d, 1)
	want := make([]float32, len(tokens)*d)
	cpu.EmbeddingForward(want, w, lo, hi, d, tokens)
	out := gpu.Alloc(len(want))
	for i := range out {
		out[i] = 9 // rows of tokens outside the shard must be cleared
	}
	gpu.EmbeddingForward(out, upload(gpu, w), lo, hi, d, tokens)
	gpu.Sync()
	expectClose(t, "EmbeddingForward", out, want, 0)

	dout := randn(r, len(tokens)*d, 1)
	dw0 := randn(r, (hi-lo)*d, 1)
	wantDW := append([]float32(nil), dw0...)
	cpu.EmbeddingBackward(wantDW, dout, lo, hi, d, tokens)
	dw := upload(gpu, dw0)
	gpu.EmbeddingBackward(dw, upload(gpu, dout), lo, hi, d, tokens)
	gpu.Sync()
	// Same order of additions as the CPU: bitwise equal.
	expectClose(t, "EmbeddingBackward", dw, wantDW, 0)
}

func TestGPURMSNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	cpu := tensor.CPU{}
	const n, d = 333, 768
	x, w := randn(r, n*d, 2), randn(r, d, 1)
	y, rstd := make([]float32, n*d), make([]float32, n)
	cpu.RMSNormForward(y, rstd, x, w, n, d, 1e-5)
	gx, gw := upload(gpu, x), upload(gpu, w)
	gy, gr := gpu.Alloc(n*d), gpu.Alloc(n)
	gpu.RMSNormForward(gy, gr, gx, gw, n, d, 1e-5)
	gpu.Sync()
	expectClose(t, "RMSNormForward y", gy, y, 1e-5)
	expectClose(t, "RMSNormForward rstd", gr, rstd, 1e-5)

	dy := randn(r, n*d, 1)
	dx0, dw0 := randn(r, n*d, 1), randn(r, d, 1)
	dx, dw := append([]float32(nil), dx0...), append([]float32(nil), dw0...)
	cpu.RMSNormBackward(dx, dw, dy, x, w, rstd, n, d)
	gdx, gdw := upload(gpu, dx0), upload(gpu, dw0)
	gpu.RMSNormBackward(gdx, gdw, upload(gpu, dy), gx, gw, upload(gpu, rstd), n, d)
	gpu.Sync()
	expectClose(t, "RMSNormBackward dx", gdx, dx, 1e-5)
	expectClose(t, "RMSNormBackward dw", gdw, dw, 1e-5)
}

func TestGPURoPEAndSwiGLU(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	cpu := tensor.CPU{}
	const n, tt, heads, hd = 200, 64, 6, 64
	cos, sin := make([]float32, tt*hd/2), make([]float32, tt*hd/2)
	tensor.RoPETables(cos, sin, tt, hd, 10000)
	x := randn(r, n*heads*hd, 1)
	want := append([]float32(nil), x...)
	cpu.RoPEForward(want, cos, sin, n, tt, heads, hd)
	gx, gc, gs := upload(gpu, x), upload(gpu, cos), upload(gpu, sin)
	gpu.RoPEForward(gx, gc, gs, n, tt, heads, hd)
	gpu.Sync()
	expectClose(t, "RoPEForward", gx, want, 1e-6)
	cpu.RoPEBackward(want, cos, sin, n, tt, heads, hd)
	gpu.RoPEBackward(gx, gc, gs, n, tt, heads, hd)
	gpu.Sync()
	expectClose(t, "RoPEBackward", gx, want, 1e-6)
	expectClose(t, "RoPE round trip", gx, x, 1e-5)

	m := 100003
	g, u, dh := randn(r, m, 3), randn(r, m, 1), randn(r, m, 1)
	h := make([]float32, m)
	cpu.SwiGLUForward(h, g, u)
	gg, gu := upload(gpu, g), upload(gpu, u)
	gh := gpu.Alloc(m)
	gpu.SwiGLUForward(gh, gg, gu)
	dg, du := make([]float32, m), make([]float32, m)
	cpu.SwiGLUBackward(dg, du, dh, g, u)
	gdh := upload(gpu, dh)
	gdu := gpu.Alloc(m)
	gpu.SwiGLUBackward(gdh, gdu, gdh, gg, gu) // dg aliases dh, as the contract allows
	gpu.Sync()
	expectClose(t, "SwiGLUForward", gh, h, 1e-5)
	expectClose(t, "SwiGLUBackward dg", gdh, dg, 1e-5)
	expectClose(t, "SwiGLUBackward du", gdu, du, 1e-5)
}

func TestGPUAttention(t *testing.T) {
	// Head widths up to 128 run the tiled kernels, wider ones (160 here) the
	// warp-per-row kernels; T is no multiple of the tile in most shapes.
	for _, sh := range []tensor.AttnShape{{B: 2, T: 100, H: 4, KV: 2, HD: 32}, {B: 1, T: 160, H: 3, KV: 3, HD: 64},
		{B: 2, T: 37, H: 2, KV: 1, HD: 80}, {B: 1, T: 300, H: 4, KV: 1, HD: 128}, {B: 2, T: 50, H: 2, KV: 2, HD: 160}} {
		t.Run(fmt.Sprintf("%+v", sh), func(t *testing.T) {
			r := rand.New(rand.NewPCG(11, uint64(sh.T)))
			cpu := tensor.CPU{}
			n := sh.B * sh.T
			qn, kn := n*sh.H*sh.HD, n*sh.KV*sh.HD
			q, k, v := randn(r, qn, 1), randn(r, kn, 1), randn(r, kn, 1)
			o, lse := make([]float32, qn), make([]float32, sh.B*sh.H*sh.T)
			cpu.AttentionForward(o, lse, q, k, v, sh)
			gq, gk, gv := upload(gpu, q), upload(gpu, k), upload(gpu, v)
			gO, gl := gpu.Alloc(qn), gpu.Alloc(len(lse))
			gpu.AttentionForward(gO, gl, gq, gk, gv, sh)
			gpu.Sync()
			expectClose(t, "attention o", gO, o, 1e-4)
			expectClose(t, "attention lse", gl, lse, 1e-5)

			dout := randn(r, qn, 1)
			dq, dk, dv := make([]float32, qn), make([]float32, kn), make([]float32, kn)
			cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse, sh)
			gdq, gdk, gdv := gpu.Alloc(qn), gpu.Alloc(kn), gpu.Alloc(kn)
			for i := range gdk {
				gdk[i] = 7 // backward overwrites
			}
			gdo := upload(gpu, dout)
			gpu.AttentionBackward(gdq, gdk, gdv, gdo, gq, gk, gv, gO, gl, sh)
			gpu.Sync()
			expectClose(t, "attention dq", gdq, dq, 1e-4)
			expectClose(t, "attention dk", gdk, dk, 1e-4)
			expectClose(t, "attention dv", gdv, dv, 1e-4)
			first := append([]float32(nil), gdk...)
			gpu.AttentionBackward(gdq, gdk, gdv, gdo, gq, gk, gv, gO, gl, sh)
			gpu.Sync()
			expectClose(t, "attention dk repeat (bitwise)", gdk, first, 0)
		})
	}
}

func TestGPUCrossEntropy(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	cpu := tensor.CPU{}
	const n, rows, lo = 97, 5003, 1000
	logits := randn(r, n*rows, 3)
	targets := make([]int32, n)
	for i := range targets {
		targets[i] = int32(r.IntN(8000))
	}
	targets[3], targets[4] = -1, lo // ignored; first row of the shard
	mx, se, tl := make([]float32, n), make([]float32, n), make([]float32, n)
	cpu.CrossEntropyStats(mx, se, tl, logits, rows, lo, targets)
	gz := upload(gpu, logits)
	gm, gs, gt := gpu.Alloc(n), gpu.Alloc(n), gpu.Alloc(n)
	gpu.CrossEntropyStats(gm, gs, gt, gz, rows, lo, targets)
	gpu.Sync()
	expectClose(t, "CrossEntropyStats max", gm, mx, 0)
	expectClose(t, "CrossEntropyStats sumExp", gs, se, 1e-5)
	expectClose(t, "CrossEntropyStats targetLogit", gt, tl, 0)

	gMax := make([]float32, n)
	gSum := make([]float32, n)
	for i := range gMax {
		gMax[i] = mx[i] + 0.5
		gSum[i] = se[i] * 1.7
	}
	want := append([]float32(nil), logits...)
	cpu.CrossEntropyBackward(want, gMax, gSum, rows, lo, targets, 0.01)
	gpu.CrossEntropyBackward(gz, upload(gpu, gMax), upload(gpu, gSum), rows, lo, targets, 0.01)
	gpu.Sync()
	expectClose(t, "CrossEntropyBackward", gz, want, 1e-5)
}

func TestGPUAdamW(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	cpu := tensor.CPU{}
	n := 300007
	for _, u := range []tensor.AdamWUpdate{
		{Form: tensor.AdamWTorch, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, StepSize: 3e-3, BC2Sqrt: 0.3, Decay: 0.999},
		{Form: tensor.AdamWHF, Beta1: 0.9, Beta2: 0.999, Eps: 1e-6, StepSize: 1e-3, Decay: 1e-4},
	} {
		w, g, m, v := randn(r, n, 1), randn(r, n, 1), randn(r, n, 0.1), randn(r, n, 0.01)
		for i := range v {
			v[i] *= v[i]
		}
		gw, gg, gm, gv := upload(gpu, w), upload(gpu, g), upload(gpu, m), upload(gpu, v)
		cpu.AdamW(w, g, m, v, u)
		gpu.AdamW(gw, gg, gm, gv, u)
		gpu.Sync()
		expectClose(t, fmt.Sprintf("AdamW form %d w", u.Form), gw, w, 1e-5)
		expectClose(t, fmt.Sprintf("AdamW form %d m", u.Form), gm, m, 1e-6)
		expectClose(t, fmt.Sprintf("AdamW form %d v", u.Form), gv, v, 1e-6)
	}
}

// TestGPUCallsFromManyThreads drives one device from goroutines locked to
// different OS threads: the CUDA context lives on the device's own thread,
// so where the caller runs does not matter.
func TestGPUCallsFromManyThreads(t *testing.T) {
	const n = 4096
	x := gpu.Alloc(n)
	for i := range x {
		x[i] = 1
	}
	done := make(chan struct{})
	for g := 0; g < 8; g++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			gpu.Scale(2, x)
			gpu.Sync()
			done <- struct{}{}
		}()
		<-done // one caller at a time, as tensor.Device asks
	}
	for i, v := range x {
		if v != 256 {
			t.Fatalf("x[%d] = %v after 8 doublings, want 256", i, v)
		}
	}
}

// TestGPUReproducibleMode checks the pedantic-math FP32 device gives the
// same products as the default one within FP32 rounding, and the same bits
// on every call.
func TestGPUReproducibleMode(t *testing.T) {
	d, err := New(Options{Reproducible: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r := rand.New(rand.NewPCG(21, 22))
	const m, n, k = 300, 200, 500
	a, b := randn(r, m*k, 1), randn(r, n*k, 1)
	want := gemmRef(false, true, m, n, k, 1, a, k, b, k, 0, make([]float32, m*n), n)
	da, db := upload(d, a), upload(d, b)
	c1, c2 := d.Alloc(m*n), d.Alloc(m*n)
	d.Gemm(false, true, m, n, k, 1, da, k, db, k, 0, c1, n)
	d.Gemm(false, true, m, n, k, 1, da, k, db, k, 0, c2, n)
	d.Sync()
	expectClose(t, "reproducible Gemm", c1, want, 1e-5)
	expectClose(t, "reproducible Gemm, second call (bitwise)", c2, c1, 0)
}

// TestGPUFailurePoisons checks that a call the device cannot carry out
// panics naming what failed, and that the device then refuses further work
// rather than computing on bad state.
func TestGPUFailurePoisons(t *testing.T) {
	d, err := New(Options{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	x := d.Alloc(1000)
	msg := panics(func() { d.Alloc(100 << 20) }) // over MaxBytes
	if !strings.Contains(msg, "out of memory") || !strings.Contains(msg, "Alloc") {
		t.Errorf("allocation over the limit: %q", msg)
	}
	if msg := panics(func() { d.Scale(2, x) }); msg == "" {
		t.Error("a device that failed went on accepting work")
	}
	if err := d.Close(); err == nil {
		t.Error("Close of a failed device returned no error")
	}
	if msg := panics(func() { d.Sync() }); !strings.Contains(msg, "closed") {
		t.Errorf("call after Close: %q", msg)
	}
}
