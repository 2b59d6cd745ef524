package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestGemmBackendSelection(t *testing.T) {
	prev := GemmBackend()
	defer SetGemmBackend(prev)
	names := GemmBackends()
	if want := BackendGo; hasAsmKernel {
		if names[0] != BackendAsm {
			t.Errorf("GemmBackends() = %v, want %q first", names, BackendAsm)
		}
	} else if !slices.Contains(names, want) {
		t.Errorf("GemmBackends() = %v, missing %q", names, want)
	}
	for _, n := range names {
		if err := SetGemmBackend(n); err != nil {
			t.Errorf("SetGemmBackend(%q) listed but failed: %v", n, err)
		}
		if GemmBackend() != n {
			t.Errorf("after SetGemmBackend(%q), GemmBackend() = %q", n, GemmBackend())
		}
		if got := (CPU{}).Name(); got != "cpu/"+n {
			t.Errorf("CPU.Name() = %q, want %q", got, "cpu/"+n)
		}
	}
	SetGemmBackend(BackendGo)
	err := SetGemmBackend("cublas")
	if err == nil || !strings.Contains(err.Error(), "allowed") {
		t.Errorf("SetGemmBackend(cublas) error = %v, want one listing the allowed names", err)
	}
	if GemmBackend() != BackendGo {
		t.Errorf("a failed SetGemmBackend changed the backend to %q", GemmBackend())
	}
	if err := GemmInitError(); err != nil {
		t.Logf("TERN_GEMM at start-up: %v", err)
	}
}

// TestOpenBLAS checks the purego binding against the float64 oracle. It only
// skips when the shared library is absent.
func TestOpenBLAS(t *testing.T) {
	if err := loadOpenBLAS(); err != nil {
		t.Skipf("libopenblas not loadable, openblas backend untested: %v", err)
	}
	withBackend(t, BackendOpenBLAS, func() {
		for i, g := range []gemmCase{
			{transA: false, transB: true, m: 67, n: 45, k: 93, alpha: 1, beta: 0, pad: 2},
			{transA: true, transB: false, m: 33, n: 70, k: 129, alpha: 0.5, beta: 1, pad: 1},
			{transA: false, transB: false, m: 1, n: 7, k: 1000, alpha: -1, beta: 2},
			{transA: true, transB: true, m: 64, n: 64, k: 64, alpha: 1, beta: 0},
		} {
			g.run(t, uint64(200+i))
		}
	})
}

// TestGemmSerialNoAlloc checks that a small GEMM below the parallel threshold
// (an attention block) does not allocate once the packing buffers are pooled.
func TestGemmSerialNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector; the plain pass of make test checks allocations")
	}
	r := rand.New(rand.NewPCG(7, 8))
	a, b, c := randSlice(r, 64*64), randSlice(r, 64*64), make([]float32, 64*64)
	for _, be := range deterministicBackends(t) {
		withBackend(t, be, func() {
			allocs := testing.AllocsPerRun(20, func() {
				Gemm(false, true, 64, 64, 64, 1, a, 64, b, 64, 0, c, 64)
			})
			if allocs > 0 {
				t.Errorf("%s: 64×64×64 Gemm allocates %.1f times per call, want 0", be, allocs)
			}
		})
	}
}

func TestGemmBadArgsPanic(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"short C", func() {
			Gemm(false, false, 2, 2, 2, 1, make([]float32, 4), 2, make([]float32, 4), 2, 0, make([]float32, 3), 2)
		}},
		{"lda < k", func() {
			Gemm(false, false, 2, 2, 3, 1, make([]float32, 6), 2, make([]float32, 6), 2, 0, make([]float32, 4), 2)
		}},
		{"ldb < k for transB", func() {
			Gemm(false, true, 2, 2, 3, 1, make([]float32, 6), 3, make([]float32, 6), 2, 0, make([]float32, 4), 2)
		}},
		{"negative m", func() { Gemm(false, false, -1, 2, 2, 1, nil, 2, nil, 2, 0, nil, 2) }},
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", tc.name)
				} else if !strings.Contains(r.(string), "tensor.Gemm") {
					t.Errorf("%s: panic %v does not name tensor.Gemm", tc.name, r)
				}
			}()
			tc.f()
		}()
	}
}

// TestKernelsAgree runs both micro-kernels on the same packed panels: their
// results differ only by FMA rounding, at most k·u relative to Σ|a||b|.
func TestKernelsAgree(t *testing.T) {
	if !hasAsmKernel {
		t.Skip("no assembly kernel on this CPU/build; the Go kernel is covered by TestGemmAgainstFloat64")
	}
	r := rand.New(rand.NewPCG(9, 10))
	for _, kc := range []int{1, 2, 3, 4, 5, 255, 256} {
		a, b := randSlice(r, kc*mr), randSlice(r, kc*nr)
		ldc := nr + 5
		c0 := randSlice(r, mr*ldc)
		for _, beta := range []float32{0, 1, -0.5} {
			c1, c2 := slices.Clone(c0), slices.Clone(c0)
			kernel6x16AVX2(kc, &a[0], &b[0], &c1[0], ldc, 1.5, beta)
			kernel6x16Go(kc, &a[0], &b[0], &c2[0], ldc, 1.5, beta)
			for i := 0; i < mr; i++ {
				for j := 0; j < ldc; j++ {
					x, y := c1[i*ldc+j], c2[i*ldc+j]
					if j >= nr {
						if x != c0[i*ldc+j] || y != c0[i*ldc+j] {
							t.Fatalf("kc=%d: column %d beyond the tile written", kc, j)
						}
						continue
					}
					var mag float64
					for p := 0; p < kc; p++ {
						mag += math.Abs(float64(a[p*mr+i]) * float64(b[p*nr+j]))
					}
					mag = 1.5*mag + math.Abs(float64(beta*c0[i*ldc+j]))
					if d := math.Abs(float64(x) - float64(y)); d > float64(kc+4)*0x1p-24*mag {
						t.Fatalf("kc=%d beta=%v: C[%d,%d] asm %v vs go %v", kc, beta, i, j, x, y)
					}
				}
			}
		}
	}
}

// FuzzGemmShape checks arbitrary small shapes and layouts against the float64
// oracle on every deterministic backend.
func FuzzGemmShape(f *testing.F) {
	f.Add(uint8(7), uint8(17), uint8(5), uint8(0), uint8(1))
	f.Add(uint8(65), uint8(7), uint8(200), uint8(3), uint8(0))
	f.Add(uint8(1), uint8(1), uint8(1), uint8(1), uint8(2))
	f.Fuzz(func(t *testing.T, m, n, k, layout, pad uint8) {
		g := gemmCase{transA: layout&1 != 0, transB: layout&2 != 0, m: int(m), n: int(n), k: int(k), alpha: 1, beta: float32(layout>>2&1) * 0.5, pad: int(pad % 4)}
		for _, be := range deterministicBackends(t) {
			withBackend(t, be, func() { g.run(t, uint64(m)<<16|uint64(n)<<8|uint64(k)) })
		}
	})
}

// TestGemmEnv re-runs this test binary with TERN_GEMM set, since the variable
// is read once at package initialisation.
func TestGemmEnv(t *testing.T) {
	if os.Getenv("TERN_GEMM_CHILD") == "1" {
		fmt.Printf("backend=%s initerr=%v\n", GemmBackend(), GemmInitError() != nil)
		return
	}
	for _, tc := range []struct{ env, want string }{
		{"go", "backend=go initerr=false"},
		{"nonsense", "backend=" + GemmBackends()[0] + " initerr=true"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGemmEnv$")
		cmd.Env = append(os.Environ(), "TERN_GEMM_CHILD=1", "TERN_GEMM="+tc.env)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child with TERN_GEMM=%s: %v\n%s", tc.env, err, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("TERN_GEMM=%s: child printed %q, want %q", tc.env, out, tc.want)
		}
	}
}

func TestTranspose8(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, blocks := range []int{0, 1, 3} {
		lds, ldd := 8*blocks+5, 16
		src := randSlice(r, 7*lds+8*blocks+1)
		for _, f := range []struct {
			name string
			fn   func(dst *float32, ldd int, src *float32, lds int, blocks int)
		}{{"go", transpose8Go}, {"asm", transpose8AVX2}} {
			if f.name == "asm" && !hasAsmKernel {
				continue
			}
			dst := make([]float32, max(8*blocks, 1)*ldd)
			f.fn(&dst[0], ldd, &src[0], lds, blocks)
			for q := 0; q < 8*blocks; q++ {
				for c := 0; c < ldd; c++ {
					want := float32(0)
					if c < 8 {
						want = src[c*lds+q]
					}
					if dst[q*ldd+c] != want {
						t.Fatalf("%s blocks=%d: dst[%d,%d] = %v, want %v", f.name, blocks, q, c, dst[q*ldd+c], want)
					}
				}
			}
		}
	}
}
