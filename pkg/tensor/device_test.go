package tensor

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestCPUDevice(t *testing.T) {
	var d Device = CPU{}
	if !strings.HasPrefix(d.Name(), "cpu/") {
		t.Errorf("Name() = %q, want cpu/<gemm backend>", d.Name())
	}
	x := d.Alloc(5)
	if len(x) != 5 {
		t.Fatalf("Alloc(5) has %d elements", len(x))
	}
	for i, v := range x {
		if v != 0 {
			t.Fatalf("Alloc: [%d] = %v, want 0", i, v)
		}
	}
	d.Sync()
}

func TestCopyAndGatherColumns(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	d := CPU{}
	const rows, srcCols = 300, 17
	src := randSlice(r, rows*srcCols)
	dst := d.Alloc(len(src))
	d.Copy(dst, src)
	for i := range src {
		if dst[i] != src[i] {
			t.Fatalf("Copy: [%d] = %v, want %v", i, dst[i], src[i])
		}
	}
	cols := []int32{16, 0, 3, 3, 9} // repeats allowed
	g := d.Alloc(rows * len(cols))
	d.GatherColumns(g, src, rows, srcCols, cols)
	for i := 0; i < rows; i++ {
		for j, c := range cols {
			if got, want := g[i*len(cols)+j], src[i*srcCols+int(c)]; got != want {
				t.Fatalf("GatherColumns: [%d,%d] = %v, want %v", i, j, got, want)
			}
		}
	}
}

// TestAdamWForms checks both forms against a float64 transcription of the
// update. The kernel rounds each of about ten operations to float32, whose
// inputs here are of order 1, so errors stay within a few 1e-7 of max(1,
// |value|) (the moments can cancel to near zero, hence the absolute floor);
// 1e-5 leaves room while a wrong term (a missing bias correction, decay on
// the wrong side) is off by far more.
func TestAdamWForms(t *testing.T) {
	const tol = 1e-5
	r := rand.New(rand.NewPCG(9, 10))
	n := 3*adamGrain + 11 // several parallel chunks
	for _, form := range []AdamWForm{AdamWTorch, AdamWHF} {
		w, g := randSlice(r, n), randSlice(r, n)
		m, v := randSlice(r, n), randSlice(r, n)
		for i := range v {
			v[i] *= v[i]
		}
		u := AdamWUpdate{Form: form, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, StepSize: 1e-2, BC2Sqrt: 0.3, Decay: 0.999}
		if form == AdamWHF {
			u.Decay = 1e-3
		}
		w0, m0, v0 := append([]float32(nil), w...), append([]float32(nil), m...), append([]float32(nil), v...)
		CPU{}.AdamW(w, g, m, v, u)
		b1, b2, eps, ss, decay := float64(u.Beta1), float64(u.Beta2), float64(u.Eps), float64(u.StepSize), float64(u.Decay)
		for i := range w {
			gi := float64(g[i])
			mi := b1*float64(m0[i]) + (1-b1)*gi
			vi := b2*float64(v0[i]) + (1-b2)*gi*gi
			var wi float64
			if form == AdamWTorch {
				wi = float64(w0[i])*decay - ss*mi/(math.Sqrt(vi)/float64(u.BC2Sqrt)+eps)
			} else {
				wi = float64(w0[i]) - ss*mi/(math.Sqrt(vi)+eps)
				wi -= decay * wi
			}
			for _, c := range []struct {
				name      string
				got, want float64
			}{{"m", float64(m[i]), mi}, {"v", float64(v[i]), vi}, {"w", float64(w[i]), wi}} {
				if math.Abs(c.got-c.want) > tol*math.Max(1, math.Abs(c.want)) {
					t.Fatalf("form %d: %s[%d] = %.9g, want %.9g", form, c.name, i, c.got, c.want)
				}
			}
		}
	}
}

// TestKernelsRejectShortBuffers checks that a kernel given a buffer shorter
// than its sizes say panics naming the kernel, before touching memory (a GPU
// device would fault instead).
func TestKernelsRejectShortBuffers(t *testing.T) {
	d := CPU{}
	short, ok := make([]float32, 3), make([]float32, 64)
	toks := []int32{0, 1}
	for _, c := range []struct {
		op   string
		call func()
	}{
		{"Copy", func() { d.Copy(short, ok) }},
		{"GatherColumns", func() { d.GatherColumns(short, ok, 4, 4, []int32{0, 1}) }},
		{"EmbeddingForward", func() { d.EmbeddingForward(short, ok, 0, 4, 4, toks) }},
		{"EmbeddingBackward", func() { d.EmbeddingBackward(ok, short, 0, 4, 4, toks) }},
		{"RMSNormForward", func() { d.RMSNormForward(ok, ok, short, ok, 2, 4, 1e-5) }},
		{"RMSNormBackward", func() { d.RMSNormBackward(ok, ok, ok, ok, ok, short, 8, 4) }},
		{"RoPEForward", func() { d.RoPEForward(ok, short, short, 4, 4, 2, 8) }},
		{"RoPEBackward", func() { d.RoPEBackward(short, ok, ok, 4, 4, 2, 8) }},
		{"SwiGLUForward", func() { d.SwiGLUForward(ok, ok, short) }},
		{"SwiGLUBackward", func() { d.SwiGLUBackward(ok, ok, short, ok, ok) }},
		{"AttentionForward", func() { d.AttentionForward(ok, ok, ok, short, ok, AttnShape{B: 1, T: 4, H: 2, KV: 1, HD: 2}) }},
		{"AttentionForward", func() { d.AttentionForward(ok, ok, ok, ok, ok, AttnShape{B: 1, T: 4, H: 3, KV: 2, HD: 2}) }},
		{"AttentionBackward", func() {
			d.AttentionBackward(ok, short, ok, ok, ok, ok, ok, ok, ok, AttnShape{B: 1, T: 4, H: 2, KV: 2, HD: 2})
		}},
		{"CrossEntropyStats", func() { d.CrossEntropyStats(ok, ok, ok, short, 4, 0, toks) }},
		{"CrossEntropyBackward", func() { d.CrossEntropyBackward(ok, short[:1], ok, 4, 0, toks, 1) }},
		{"AdamW", func() { d.AdamW(ok, ok, short, ok, AdamWUpdate{}) }},
		{"AdamW", func() { d.AdamW(ok, ok, ok, ok, AdamWUpdate{Form: 7}) }},
	} {
		func() {
			defer func() {
				msg, _ := recover().(string)
				if !strings.Contains(msg, "tensor."+c.op) {
					t.Errorf("%s with a bad argument: panic %q, want one naming tensor.%s", c.op, msg, c.op)
				}
			}()
			c.call()
		}()
	}
}
