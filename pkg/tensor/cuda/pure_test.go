package cuda

import (
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

func TestSearchDirsOrder(t *testing.T) {
	env := map[string]string{
		EnvLibDir:         "/override",
		"LD_LIBRARY_PATH": "/a:/b::/a",
		"VIRTUAL_ENV":     "/venv",
	}
	fs := []string{ // directories that exist on the imagined machine
		"/usr/local/cuda-12.4/targets/x86_64-linux/lib", "/usr/local/cuda-13.0/targets/x86_64-linux/lib",
		"/venv/lib/python3.12/site-packages/nvidia/cu13/lib", "/venv/lib/python3.12/site-packages/nvidia/cublas/lib",
	}
	glob := func(p string) []string {
		var m []string
		for _, d := range fs {
			if ok, _ := filepath.Match(p, d); ok {
				m = append(m, d)
			}
		}
		return m
	}
	dirs := searchDirs(libCuBLAS, func(k string) string { return env[k] }, glob)
	if dirs[0] != "/override" || dirs[1] != "/a" || dirs[2] != "/b" {
		t.Fatalf("dirs start %v, want override then LD_LIBRARY_PATH in order without repeats", dirs[:3])
	}
	i13 := slices.Index(dirs, "/usr/local/cuda-13.0/targets/x86_64-linux/lib")
	i12 := slices.Index(dirs, "/usr/local/cuda-12.4/targets/x86_64-linux/lib")
	if i13 < 0 || i12 < 0 || i13 > i12 {
		t.Errorf("CUDA toolkit dirs at %d (13.0) and %d (12.4): want both, newest first", i13, i12)
	}
	pip := slices.Index(dirs, "/venv/lib/python3.12/site-packages/nvidia/cu13/lib")
	if pip < 0 || pip < i12 {
		t.Errorf("pip wheel dir at %d: want it present and after the standard dirs", pip)
	}
	if !slices.Contains(dirs, "/venv/lib/python3.12/site-packages/nvidia/cublas/lib") {
		t.Errorf("no nvidia/cublas/lib dir in %v", dirs)
	}
	for _, d := range dirs {
		if strings.Contains(d, "$") || strings.HasPrefix(d, "/.local") {
			t.Errorf("dir %q came from an unset variable", d)
		}
	}
}

func TestCandidatesBareNamesFirst(t *testing.T) {
	have := map[string]bool{"/x/libnvrtc.so.12": true, "/y/libnvrtc.so.13": true}
	got := candidates(libNVRTC, []string{"/x", "/y"}, func(p string) bool { return have[p] })
	want := append(append([]string(nil), libNVRTC.names...), "/x/libnvrtc.so.12", "/y/libnvrtc.so.13")
	if !slices.Equal(got, want) {
		t.Errorf("candidates = %v, want %v", got, want)
	}
}

func TestLibraryErrorNamesWhatAndWhere(t *testing.T) {
	e := &LibraryError{What: "cuBLAS", Names: []string{"libcublas.so.13"}, Dirs: []string{"/opt/lib"}, Err: errors.New("not found")}
	msg := e.Error()
	for _, want := range []string{"cuBLAS", "libcublas.so.13", "/opt/lib", "not found", EnvLibDir} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if !errors.Is(e, e.Err) {
		t.Error("LibraryError does not unwrap to the dlopen error")
	}
}

func TestStatusNames(t *testing.T) {
	cases := []struct{ got, want string }{
		{cuResult(2).String(), "CUDA_ERROR_OUT_OF_MEMORY"},
		{cuResult(201).String(), "CUDA_ERROR_INVALID_CONTEXT"},
		{cuResult(12345).String(), "CUresult 12345"},
		{nvrtcResult(6).String(), "NVRTC_ERROR_COMPILATION"},
		{nvrtcResult(-1).String(), "nvrtcResult -1"},
		{cublasStatus(13).String(), "CUBLAS_STATUS_EXECUTION_FAILED"},
		{cublasStatus(99).String(), "cublasStatus 99"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if checkCU("x", "cuInit", 0) != nil {
		t.Error("CUDA_SUCCESS gave an error")
	}
	err := checkCU("kernel rope", "cuLaunchKernel", 700)
	if err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_ILLEGAL_ADDRESS") || !strings.Contains(err.Error(), "kernel rope") {
		t.Errorf("error %v should name the op and the status", err)
	}
}

func TestArgPack(t *testing.T) {
	var p argPack
	p.ptr(0xdeadbeef000).i32(-7).i64(1 << 40).f32(1.5).f64(-2.25)
	if p.err != nil || p.n != 5 {
		t.Fatalf("n = %d, err = %v", p.n, p.err)
	}
	p.bindParams()
	if got := p.slots[0]; got != 0xdeadbeef000 {
		t.Errorf("ptr slot = %#x", got)
	}
	if got := *(*int32)(unsafe.Pointer(&p.slots[1])); got != -7 {
		t.Errorf("int32 read from its slot = %d, want -7", got)
	}
	if got := *(*int64)(unsafe.Pointer(&p.slots[2])); got != 1<<40 {
		t.Errorf("int64 slot = %d", got)
	}
	if got := *(*float32)(unsafe.Pointer(&p.slots[3])); got != 1.5 {
		t.Errorf("float slot = %v", got)
	}
	if got := *(*float64)(unsafe.Pointer(&p.slots[4])); got != -2.25 {
		t.Errorf("double slot = %v", got)
	}
	for i := 0; i < 5; i++ {
		if p.params[i] != uintptr(unsafe.Pointer(&p.slots[i])) {
			t.Errorf("params[%d] does not point at slot %d", i, i)
		}
	}
	var q argPack
	q.i32(math.MaxInt32 + 1)
	if q.err == nil {
		t.Error("an int past 32 bits was accepted")
	}
	var r argPack
	for i := 0; i <= maxKernelArgs; i++ {
		r.i32(i)
	}
	if r.err == nil || r.n != maxKernelArgs {
		t.Errorf("overflowing the pack: n = %d, err = %v", r.n, r.err)
	}
}

func TestGrid1D(t *testing.T) {
	for _, c := range []struct {
		n, block, max int
		want          uint32
	}{
		{0, 256, 10, 0}, {1, 256, 10, 1}, {256, 256, 10, 1}, {257, 256, 10, 2}, {1 << 30, 256, 8192, 8192},
	} {
		if got := grid1D(c.n, c.block, c.max); got != c.want {
			t.Errorf("grid1D(%d, %d, %d) = %d, want %d", c.n, c.block, c.max, got, c.want)
		}
	}
}

func TestSpansOwns(t *testing.T) {
	var s spans
	s = s.insert(span{base: 5000, size: 1000})
	s = s.insert(span{base: 1000, size: 1000})
	cases := []struct {
		p, n uintptr
		want bool
	}{
		{1000, 4, true}, {1996, 4, true}, {1997, 4, false}, {999, 4, false},
		{2000, 4, false}, {5000, 1000, true}, {5000, 1001, false}, {4000, 8, false},
	}
	for _, c := range cases {
		if got := s.owns(c.p, c.n); got != c.want {
			t.Errorf("owns(%d, %d) = %v, want %v", c.p, c.n, got, c.want)
		}
	}
}

func panics(f func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = strings.TrimSpace(strings.ReplaceAll(toString(r), "\n", " "))
		}
	}()
	f()
	return ""
}

func toString(r any) string {
	if e, ok := r.(error); ok {
		return e.Error()
	}
	if s, ok := r.(string); ok {
		return s
	}
	return "?"
}

func TestBufPtrChecks(t *testing.T) {
	x := make([]float32, 16)
	base := uintptr(unsafe.Pointer(&x[0]))
	owned := spans{{base: base, size: 64}}
	if p := bufPtr(owned, "Op", "x", x, 16); p != base {
		t.Errorf("bufPtr = %#x, want %#x", p, base)
	}
	if p := bufPtr(owned, "Op", "x", nil, 0); p != 0 {
		t.Errorf("empty buffer gave %#x", p)
	}
	if msg := panics(func() { bufPtr(owned, "Op", "x", x, 17) }); !strings.Contains(msg, "x has 16 elements, need at least 17") {
		t.Errorf("short buffer: %q", msg)
	}
	y := make([]float32, 4)
	if msg := panics(func() { bufPtr(owned, "Op", "y", y, 4) }); !strings.Contains(msg, "not memory of this device") {
		t.Errorf("foreign buffer: %q", msg)
	}
}

func TestGemmNeedAndCuBLASMapping(t *testing.T) {
	if n := gemmNeed("A", false, 3, 4, 5); n != 2*5+4 {
		t.Errorf("A 3×4 ld 5 needs %d", n)
	}
	if n := gemmNeed("A", true, 3, 4, 3); n != 3*3+3 {
		t.Errorf("Aᵀ (stored 4×3, ld 3) needs %d", n)
	}
	if msg := panics(func() { gemmNeed("B", false, 2, 8, 7) }); !strings.Contains(msg, "leading dimension of B is 7, need at least 8") {
		t.Errorf("small ld: %q", msg)
	}
	// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: B goes
	// first with its own transposition, and m and n swap.
	o1, o2, cm, cn, ck := cublasGemmArgs(false, true, 10, 20, 30)
	if o1 != 1 || o2 != 0 || cm != 20 || cn != 10 || ck != 30 {
		t.Errorf("mapping = %d %d %d %d %d", o1, o2, cm, cn, ck)
	}
}

func TestEmbedPlan(t *testing.T) {
	tokens := []int32{7, 3, 7, 12, 3, 7, 9, 2}
	p := newEmbedPlan(tokens, 3, 10) // shard rows 3..9
	if !slices.Equal(p.rows, []int32{0, 4, 6}) {
		t.Errorf("rows = %v, want local rows of 3, 7, 9", p.rows)
	}
	if !slices.Equal(p.start, []int32{0, 2, 5, 6}) {
		t.Errorf("start = %v", p.start)
	}
	if !slices.Equal(p.pos, []int32{1, 4, 0, 2, 5, 6}) {
		t.Errorf("pos = %v: each row's positions in token order", p.pos)
	}
	if e := newEmbedPlan([]int32{0, 1}, 5, 9); len(e.rows) != 0 || len(e.pos) != 0 || len(e.start) != 1 {
		t.Errorf("no token in shard: %+v", e)
	}
	// The counting sort (shards up to denseShardMax rows) and the map
	// (larger shards) build the same plan.
	r := rand.New(rand.NewPCG(3, 4))
	tok := make([]int32, 5000)
	for i := range tok {
		tok[i] = int32(r.IntN(700))
	}
	for _, sh := range [][2]int{{0, 700}, {100, 400}, {650, 1000}, {700, 800}} {
		d, m := denseEmbedPlan(tok, sh[0], sh[1]), sparseEmbedPlan(tok, sh[0], sh[1])
		if !slices.Equal(d.rows, m.rows) || !slices.Equal(d.start, m.start) || !slices.Equal(d.pos, m.pos) {
			t.Errorf("shard %v: counting-sort and map plans differ", sh)
		}
	}
}

func TestKernelSourceDefinesEveryKernel(t *testing.T) {
	for _, k := range kernelNames {
		re := regexp.MustCompile(`extern "C" __global__ void (__launch_bounds__\([^)]*\) )?` + k + `\(`)
		if !re.MatchString(kernelSource) {
			t.Errorf("kernels.cu has no extern \"C\" kernel %s", k)
		}
	}
	defined := regexp.MustCompile(`extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(`).FindAllStringSubmatch(kernelSource, -1)
	if len(defined) != len(kernelNames) {
		t.Errorf("kernels.cu defines %d kernels, kernelNames lists %d", len(defined), len(kernelNames))
	}
	if regexp.MustCompile(`atomic[A-Z]\w*\(`).MatchString(kernelSource) {
		t.Error("kernels.cu uses atomics; every sum must have a fixed order")
	}
}

func TestNVRTCOptionsAndPrecision(t *testing.T) {
	if got := nvrtcOptions(9, 0, false); got[0] != "--gpu-architecture=sm_90" {
		t.Errorf("native options %v", got)
	}
	if got := nvrtcOptions(8, 6, true); got[0] != "--gpu-architecture=compute_86" {
		t.Errorf("PTX options %v", got)
	}
	for _, s := range []string{"fp32", "TF32", "bf16"} {
		p, err := ParsePrecision(s)
		if err != nil || !strings.EqualFold(p.String(), s) {
			t.Errorf("ParsePrecision(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePrecision("fp16"); err == nil || !strings.Contains(err.Error(), "fp32, tf32, bf16") {
		t.Errorf("bad precision error %v should list the allowed values", err)
	}
	if computeType(FP32, false) != cublasCompute32F || computeType(FP32, true) != cublasCompute32FPedantic ||
		computeType(TF32, false) != cublasCompute32FFastTF32 || computeType(BF16, true) != cublasCompute32FPedantic {
		t.Error("compute type mapping changed")
	}
}

// TestNewWithoutGPU checks that New fails cleanly, naming what it looked
// for, on a machine without the CUDA driver (skipped where one exists).
func TestNewWithoutGPU(t *testing.T) {
	if h, _, err := open(libDriver); err == nil && h != 0 {
		t.Skip("a CUDA driver is present; the gpu-tagged tests cover New")
	}
	_, err := New(Options{})
	var le *LibraryError
	if !errors.As(err, &le) || le.What != "CUDA driver" || !strings.Contains(err.Error(), "libcuda.so.1") {
		t.Errorf("New without a driver: %v, want a LibraryError naming libcuda.so.1", err)
	}
	if _, err := New(Options{Precision: 9}); err == nil || !strings.Contains(err.Error(), "precision") {
		t.Errorf("bad precision: %v", err)
	}
}

func TestAttnTiledSmemFitsDefaultLimit(t *testing.T) {
	// Up to 48 KiB needs no opt-in; the device raises the limit of the
	// tiled kernels to attnSmemOptIn, which every GPU since Volta allows.
	for k := 0; k < 3; k++ {
		if got := attnTiledSmem(attnTiledHD, k); got > attnSmemOptIn {
			t.Errorf("kernel %d at head width %d needs %d bytes of shared memory", k, attnTiledHD, got)
		}
		if got := attnTiledSmem(64, k); got > 48<<10 {
			t.Errorf("kernel %d at head width 64 needs %d bytes, more than the default 48 KiB", k, got)
		}
	}
	if got, want := attnTiledSmem(64, 0), uint32(4*(2*32*65+32*64)); got != want {
		t.Errorf("forward smem at hd 64 = %d, want %d", got, want)
	}
}

// Ordinals below auto, and auto with a negative local rank, are refused
// before any library is looked for.
func TestNewRefusesBadOrdinal(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Ordinal: -2}, "want -1 (auto, from the local rank) or 0 and up"},
		{Options{Ordinal: AutoOrdinal, LocalRank: -1}, "local rank -1 is negative"},
	} {
		if _, err := New(c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", c.o, err, c.want)
		}
	}
}
