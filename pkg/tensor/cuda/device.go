package cuda

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ternml/tern/pkg/tensor"
)

// Precision picks how Gemm multiplies; parameters, gradients and every other
// kernel stay float32 whatever it is.
type Precision uint8

const (
	// FP32 multiplies in float32 on the CUDA cores (CUBLAS_COMPUTE_32F).
	FP32 Precision = iota
	// TF32 rounds the inputs to TensorFloat-32 (10-bit mantissa) for the
	// tensor cores and accumulates in float32 (CUBLAS_COMPUTE_32F_FAST_TF32).
	TF32
	// BF16 rounds both operands to bfloat16 (round to nearest even, a
	// kernel of this package, into scratch) and multiplies them on the
	// tensor cores with float32 accumulation and a float32 result
	// (cublasGemmEx with CUDA_R_16BF inputs, CUBLAS_COMPUTE_32F).
	BF16
)

var precisionNames = []string{"fp32", "tf32", "bf16"}

func (p Precision) String() string {
	if int(p) < len(precisionNames) {
		return precisionNames[p]
	}
	return fmt.Sprintf("Precision(%d)", uint8(p))
}

// ParsePrecision reads "fp32", "tf32" or "bf16".
func ParsePrecision(s string) (Precision, error) {
	for i, n := range precisionNames {
		if strings.EqualFold(s, n) {
			return Precision(i), nil
		}
	}
	return 0, fmt.Errorf("cuda precision %q unknown (allowed: %s)", s, strings.Join(precisionNames, ", "))
}

// cuBLAS compute types (cublasComputeType_t) and math modes.
const (
	cublasCompute32F         = 68
	cublasCompute32FPedantic = 69
	cublasCompute32FFastTF32 = 77
	cublasDefaultMath        = 0
	cublasPedanticMath       = 2
	cudaR32F                 = 0
	cudaR16BF                = 14
	cublasGemmDefault        = -1
)

// computeType is the cuBLAS compute type of p; reproducible forbids the
// reduced-precision reductions FP32 may otherwise use.
func computeType(p Precision, reproducible bool) int32 {
	if p == TF32 {
		return cublasCompute32FFastTF32
	}
	// FP32, and BF16 whose operands are already bfloat16.
	if reproducible {
		return cublasCompute32FPedantic
	}
	return cublasCompute32F
}

// AutoOrdinal asks New for the GPU of Options.LocalRank.
const AutoOrdinal = -1

// Options configure New.
type Options struct {
	// Ordinal is the GPU to use (0 = the first CUDA sees), or AutoOrdinal:
	// GPU LocalRank modulo the number CUDA sees.
	Ordinal int
	// LocalRank picks the GPU when Ordinal is AutoOrdinal: a rank's index
	// among the ranks sharing the machine.
	LocalRank int
	// Precision of Gemm: FP32 (default), TF32 or BF16.
	Precision Precision
	// Reproducible asks cuBLAS for pedantic math (no reduced-precision
	// reductions). Every kernel of this package is deterministic anyway,
	// and cuBLAS gives bitwise-identical results run to run on the same GPU
	// model and library version when it runs on one stream with a fixed
	// workspace, which this device always does.
	Reproducible bool
	// MaxBytes caps the managed memory the device hands out through Alloc.
	// Zero means 90% of the GPU memory free when the device starts: managed
	// memory beyond what the GPU holds would page between host and GPU, and
	// can stall the GPU for everyone sharing it.
	MaxBytes int64
	// FloatAttention keeps attention on the float32 tiled kernels in BF16
	// precision too. By default BF16 runs attention as bfloat16 GEMMs on
	// the tensor cores (attn_tc.go), when a pair's T×T scores fit a chunk.
	FloatAttention bool
	// NoGemmPadding keeps BF16 GEMM operands at the caller's leading
	// dimensions and inner dimension. By default an operand with rows not
	// 16-byte aligned, or an inner dimension not a multiple of 8, is
	// repacked aligned and zero-padded, which the tensor cores need at full
	// speed; the option is for comparison.
	NoGemmPadding bool
}

// Info describes the GPU and libraries a device runs on.
type Info struct {
	GPU           string
	Major, Minor  int // compute capability
	SMs           int
	FreeBytes     int64 // GPU memory free at start
	TotalBytes    int64
	CuBLASVersion int
	Libs          Libs
}

// Device is a tensor.Device on one NVIDIA GPU. One goroutine, locked to its
// OS thread (a CUDA context is current per thread), owns the context, the
// stream, the cuBLAS handle and the kernels; every method queues a command
// for it. Kernels run asynchronously in call order: a method returns once
// its command is queued, with index arguments already copied. Alloc,
// SumSquares and Sync wait for the queue. A command that fails makes the
// device unusable: that call (if it waits) or the next call panics with the
// error, naming the kernel and the CUDA status.
//
// Alloc hands out CUDA managed memory (cuMemAllocManaged), so the host can
// initialise parameters and read results through the returned slices, as
// tensor.Device's memory contract says; buffers live until Close.
type Device struct {
	opts   Options
	info   Info
	cmds   chan command
	exited chan struct{}
	failed atomic.Pointer[error]
	closed atomic.Bool
	owned  atomic.Pointer[spans]
	mu     sync.Mutex // serialises Close
	// attnSmemLimit is the dynamic shared memory the tiled attention
	// kernels may take (set once at New): attnSmemOptIn where the GPU
	// granted it, else CUDA's default 48 KiB.
	attnSmemLimit uint32
	w             *worker // touched by the worker goroutine only
}

var _ tensor.Device = (*Device)(nil)

type command struct {
	op    string
	run   func(w *worker) error
	reply chan error
	stop  bool
}

// queueDepth is how many commands may wait for the GPU thread before a
// caller blocks: enough for a whole step of a model's kernels.
const queueDepth = 4096

// New loads the CUDA libraries, starts the GPU thread and compiles the
// kernels. It fails, with an error naming what was missing, on a machine
// without a usable GPU.
func New(opts Options) (*Device, error) {
	if opts.Precision > BF16 {
		return nil, fmt.Errorf("cuda precision %d unknown (allowed: fp32, tf32, bf16)", opts.Precision)
	}
	if opts.Ordinal < AutoOrdinal {
		return nil, fmt.Errorf("cuda GPU ordinal %d: want %d (auto, from the local rank) or 0 and up", opts.Ordinal, AutoOrdinal)
	}
	if opts.Ordinal == AutoOrdinal && opts.LocalRank < 0 {
		return nil, fmt.Errorf("cuda local rank %d is negative", opts.LocalRank)
	}
	l, err := loadLibs()
	if err != nil {
		return nil, err
	}
	d := &Device{opts: opts, cmds: make(chan command, queueDepth), exited: make(chan struct{})}
	d.owned.Store(&spans{})
	d.info.Libs = l
	ready := make(chan error, 1)
	go d.loop(ready)
	if err := <-ready; err != nil {
		<-d.exited
		return nil, err
	}
	return d, nil
}

// Info reports the GPU and libraries in use.
func (d *Device) Info() Info { return d.info }

// Name is "cuda<ordinal>/<precision>", e.g. "cuda0/tf32".
func (d *Device) Name() string { return fmt.Sprintf("cuda%d/%s", d.opts.Ordinal, d.opts.Precision) }

// Close waits for queued work, frees every buffer and the GPU context. The
// slices Alloc returned must not be used afterwards.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Swap(true) {
		return nil
	}
	d.cmds <- command{stop: true}
	<-d.exited
	if p := d.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (d *Device) loop(ready chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(d.exited)
	w, err := newWorker(d)
	if err != nil {
		if w != nil {
			w.release()
		}
		ready <- err
		return
	}
	d.w = w
	ready <- nil
	for c := range d.cmds {
		if c.stop {
			if p := d.failed.Load(); p == nil {
				if err := checkCU("Close", "cuStreamSynchronize", cuStreamSynchronize(w.stream)); err != nil {
					d.failed.Store(&err)
				}
			}
			w.release()
			return
		}
		var err error
		if p := d.failed.Load(); p != nil {
			err = *p
		} else if err = c.run(w); err != nil {
			err = fmt.Errorf("%s: %w", c.op, err)
			d.failed.Store(&err)
		}
		if c.reply != nil {
			c.reply <- err
		}
	}
}

// ErrClosed is the panic value of a call on a closed device.
var ErrClosed = errors.New("cuda device is closed")

func (d *Device) enter() {
	if d.closed.Load() {
		panic(ErrClosed)
	}
	if p := d.failed.Load(); p != nil {
		panic(*p)
	}
}

// async queues f; a failure surfaces at a later call.
func (d *Device) async(op string, f func(w *worker) error) {
	d.enter()
	d.cmds <- command{op: op, run: f}
}

// call queues f and waits for it, panicking if it failed.
func (d *Device) call(op string, f func(w *worker) error) {
	d.enter()
	reply := make(chan error, 1)
	d.cmds <- command{op: op, run: f, reply: reply}
	if err := <-reply; err != nil {
		panic(err)
	}
}

// buf checks x against this device's memory (see bufPtr).
func (d *Device) buf(op, name string, x []float32, n int) uintptr {
	return bufPtr(*d.owned.Load(), op, name, x, n)
}

// Sync waits for every queued kernel.
func (d *Device) Sync() {
	d.call("Sync", func(w *worker) error {
		return checkCU("Sync", "cuStreamSynchronize", cuStreamSynchronize(w.stream))
	})
}

// Alloc returns n zeroed float32s of managed memory.
func (d *Device) Alloc(n int) []float32 {
	if n < 0 {
		panic(fmt.Sprintf("cuda.Alloc: negative length %d", n))
	}
	if n == 0 {
		return []float32{}
	}
	var p unsafe.Pointer
	d.call("Alloc", func(w *worker) (err error) {
		p, err = w.allocManaged(uintptr(n) * 4)
		return err
	})
	return unsafe.Slice((*float32)(p), n)
}

// MemStats is the GPU memory a device holds. Nothing is freed before
// Close, so these are also the peaks.
type MemStats struct {
	// Used is what Alloc handed out (parameters, gradients, optimizer
	// state, activations), Managed the managed chunks it was carved from.
	Used, Managed int64
	// Scratch is the device's own plain device memory: kernels' scratch
	// (BF16 operands, attention's score matrices), the cuBLAS workspace and
	// the index staging ring.
	Scratch int64
}

// Memory reports the memory the device holds now.
func (d *Device) Memory() MemStats {
	var s MemStats
	d.call("Memory", func(w *worker) error {
		for _, c := range w.chunks {
			s.Used += int64(c.used)
			s.Managed += int64(c.size)
		}
		s.Scratch = workspaceBytes + int64(w.stageCap)
		for _, b := range w.scratch {
			s.Scratch += int64(b.size)
		}
		return nil
	})
	return s
}

// ---- the GPU thread's state ----

// Sizes of the device's own buffers.
const (
	chunkBytes     = 64 << 20 // managed memory is taken from CUDA in chunks of at least this
	allocAlign     = 256      // every Alloc starts on a 256-byte boundary (cuBLAS and vector loads like it)
	workspaceBytes = 32 << 20 // cuBLAS workspace, fixed so its choice of algorithm is too
	stageMinBytes  = 1 << 20  // index staging ring, grown on demand
	sumsqBlocks    = 1024     // blocks of the first SumSquares pass: fixed, so the sum order is
)

type chunk struct {
	base unsafe.Pointer
	size uintptr
	used uintptr
}

type devBuf struct {
	ptr  uintptr
	size uintptr
}

type worker struct {
	d         *Device
	dev       int32
	ctx       uintptr
	stream    uintptr
	blas      uintptr
	mod       uintptr
	fn        map[string]uintptr
	args      *argPack
	pin       runtime.Pinner
	compute   int32
	chunks    []chunk
	budget    uintptr // bytes of managed memory Alloc may take
	taken     uintptr
	workspace uintptr
	scratch   map[string]devBuf
	// index staging: a pinned host ring and a device ring at the same offsets
	stageHost unsafe.Pointer
	stageDev  uintptr
	stageCap  uintptr
	stageOff  uintptr
	hostOut   unsafe.Pointer // 8 pinned bytes for results read by the host
}

func newWorker(d *Device) (*worker, error) {
	w := &worker{d: d, args: new(argPack), scratch: map[string]devBuf{}}
	w.pin.Pin(w.args)
	w.args.bindParams()
	var count int32
	if err := checkCU("New", "cuDeviceGetCount", cuDeviceGetCount(&count)); err != nil {
		return w, err
	}
	if count < 1 {
		return w, errors.New("cuda: the driver sees no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
	}
	if d.opts.Ordinal == AutoOrdinal {
		d.opts.Ordinal = d.opts.LocalRank % int(count)
	}
	if d.opts.Ordinal >= int(count) {
		return w, fmt.Errorf("cuda GPU %d requested but CUDA sees %d GPU(s) (allowed: 0..%d)", d.opts.Ordinal, count, count-1)
	}
	if err := checkCU("New", "cuDeviceGet", cuDeviceGet(&w.dev, int32(d.opts.Ordinal))); err != nil {
		return w, err
	}
	var name [256]byte
	if err := checkCU("New", "cuDeviceGetName", cuDeviceGetName(&name[0], int32(len(name)), w.dev)); err != nil {
		return w, err
	}
	d.info.GPU = strings.TrimRight(string(name[:]), "\x00")
	attr := func(a int32) int {
		var v int32
		cuDeviceGetAttribute(&v, a, w.dev)
		return int(v)
	}
	const (
		attrSMs              = 16
		attrCCMajor          = 75
		attrCCMinor          = 76
		attrManagedMemory    = 83
		attrConcurrentManage = 89
	)
	d.info.Major, d.info.Minor, d.info.SMs = attr(attrCCMajor), attr(attrCCMinor), attr(attrSMs)
	if attr(attrManagedMemory) == 0 {
		return w, fmt.Errorf("cuda GPU %d (%s) does not support managed memory, which this device needs", d.opts.Ordinal, d.info.GPU)
	}
	if err := checkCU("New", "cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRet(&w.ctx, w.dev)); err != nil {
		return w, err
	}
	if err := checkCU("New", "cuCtxSetCurrent", cuCtxSetCurrent(w.ctx)); err != nil {
		return w, err
	}
	var free, total uintptr
	if err := checkCU("New", "cuMemGetInfo", cuMemGetInfo(&free, &total)); err != nil {
		return w, err
	}
	d.info.FreeBytes, d.info.TotalBytes = int64(free), int64(total)
	w.budget = free / 10 * 9
	if d.opts.MaxBytes > 0 && uintptr(d.opts.MaxBytes) < w.budget {
		w.budget = uintptr(d.opts.MaxBytes)
	}
	if err := checkCU("New", "cuStreamCreate", cuStreamCreate(&w.stream, 1 /* CU_STREAM_NON_BLOCKING */)); err != nil {
		return w, err
	}
	var err error
	if w.mod, w.fn, err = loadModule(d.info.Major, d.info.Minor); err != nil {
		return w, err
	}
	d.attnSmemLimit = 48 << 10
	const funcMaxDynamicSharedBytes = 8 // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
	granted := true
	const funcPreferredCarveout = 9 // CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, percent of the unified L1
	for _, k := range []string{"attn_fwd_tiled4", "attn_bwd_dq_tiled4", "attn_bwd_dkv_tiled4", "attn_fwd_tiled2", "attn_bwd_dq_tiled2", "attn_bwd_dkv_tiled2"} {
		granted = granted && cuFuncSetAttribute(w.fn[k], funcMaxDynamicSharedBytes, attnSmemOptIn) == 0
		// As much shared memory as the SM has, so that register use rather
		// than the carve-out bounds the blocks per SM; a hint, so failure
		// is harmless.
		cuFuncSetAttribute(w.fn[k], funcPreferredCarveout, 100)
	}
	if granted {
		d.attnSmemLimit = attnSmemOptIn
	}
	if err := checkCuBLAS("New", "cublasCreate", cublasCreate(&w.blas)); err != nil {
		return w, err
	}
	var bv int32
	cublasGetVersion(w.blas, &bv)
	d.info.CuBLASVersion = int(bv)
	if err := checkCuBLAS("New", "cublasSetStream", cublasSetStream(w.blas, w.stream)); err != nil {
		return w, err
	}
	mode := int32(cublasDefaultMath)
	if d.opts.Reproducible {
		mode = cublasPedanticMath
	}
	if err := checkCuBLAS("New", "cublasSetMathMode", cublasSetMathMode(w.blas, mode)); err != nil {
		return w, err
	}
	if err := checkCU("New", "cuMemAlloc(workspace)", cuMemAlloc(&w.workspace, workspaceBytes)); err != nil {
		return w, err
	}
	if err := checkCuBLAS("New", "cublasSetWorkspace", cublasSetWorkspace(w.blas, w.workspace, workspaceBytes)); err != nil {
		return w, err
	}
	w.compute = computeType(d.opts.Precision, d.opts.Reproducible)
	if err := checkCU("New", "cuMemHostAlloc", cuMemHostAlloc(&w.hostOut, 64, 0)); err != nil {
		return w, err
	}
	return w, nil
}

// release frees everything the worker holds; errors are ignored, since the
// context goes with it.
func (w *worker) release() {
	if w.ctx != 0 {
		cuCtxSetCurrent(w.ctx)
		if w.stream != 0 {
			cuStreamSynchronize(w.stream)
		}
		for _, c := range w.chunks {
			cuMemFreeManaged(c.base)
		}
		for _, b := range w.scratch {
			cuMemFree(b.ptr)
		}
		if w.stageDev != 0 {
			cuMemFree(w.stageDev)
			cuMemFreeHost(w.stageHost)
		}
		if w.hostOut != nil {
			cuMemFreeHost(w.hostOut)
		}
		if w.blas != 0 {
			cublasDestroy(w.blas)
		}
		if w.workspace != 0 {
			cuMemFree(w.workspace)
		}
		if w.mod != 0 {
			cuModuleUnload(w.mod)
		}
		if w.stream != 0 {
			cuStreamDestroy(w.stream)
		}
		cuDevicePrimaryCtxRel(w.dev)
	}
	w.pin.Unpin()
	w.d.owned.Store(&spans{})
}

// allocManaged returns size zeroed bytes of managed memory from the chunks,
// taking a new chunk from CUDA when none has room.
func (w *worker) allocManaged(size uintptr) (unsafe.Pointer, error) {
	size = (size + allocAlign - 1) / allocAlign * allocAlign
	ci := -1
	for i := range w.chunks {
		if w.chunks[i].size-w.chunks[i].used >= size {
			ci = i
			break
		}
	}
	if ci < 0 {
		cs := max(size, chunkBytes)
		if w.taken+cs > w.budget {
			return nil, fmt.Errorf("cuda out of memory: %d MiB more would exceed the device's limit of %d MiB (%d MiB already taken); use a smaller model or batch, or raise Options.MaxBytes up to what the GPU has free",
				cs>>20, w.budget>>20, w.taken>>20)
		}
		var p unsafe.Pointer
		if err := checkCU("", "cuMemAllocManaged", cuMemAllocManaged(&p, cs, 1 /* CU_MEM_ATTACH_GLOBAL */)); err != nil {
			return nil, err
		}
		w.taken += cs
		w.chunks = append(w.chunks, chunk{base: p, size: cs})
		ci = len(w.chunks) - 1
		owned := w.d.owned.Load().insert(span{base: uintptr(p), size: cs})
		w.d.owned.Store(&owned)
	}
	c := &w.chunks[ci]
	p := unsafe.Add(c.base, c.used)
	c.used += size
	if err := checkCU("", "cuMemsetD32Async", cuMemsetD32Async(uintptr(p), 0, size/4, w.stream)); err != nil {
		return nil, err
	}
	// The caller may write the buffer from the host as soon as Alloc returns.
	return p, checkCU("", "cuStreamSynchronize", cuStreamSynchronize(w.stream))
}

// scratchBuf returns at least size bytes of device memory kept under name,
// growing it (after the stream drains, since queued kernels may use it).
func (w *worker) scratchBuf(name string, size uintptr) (uintptr, error) {
	b := w.scratch[name]
	if b.size >= size {
		return b.ptr, nil
	}
	if b.ptr != 0 {
		if err := checkCU("", "cuStreamSynchronize", cuStreamSynchronize(w.stream)); err != nil {
			return 0, err
		}
		cuMemFree(b.ptr)
		delete(w.scratch, name)
	}
	ns := max(size, 2*b.size)
	var p uintptr
	if err := checkCU("", "cuMemAlloc("+name+")", cuMemAlloc(&p, ns)); err != nil {
		return 0, err
	}
	w.scratch[name] = devBuf{ptr: p, size: ns}
	return p, nil
}

// stage copies host indices to the device through the pinned ring and
// returns their device address; the copy is queued on the stream, so the
// kernels after it see the values. A slot is reused only after the stream
// has drained.
func (w *worker) stage(idx []int32) (uintptr, error) {
	n := uintptr(len(idx)) * 4
	if n == 0 {
		return 0, nil
	}
	need := (n + allocAlign - 1) / allocAlign * allocAlign
	if w.stageOff+need > w.stageCap {
		if err := checkCU("", "cuStreamSynchronize", cuStreamSynchronize(w.stream)); err != nil {
			return 0, err
		}
		w.stageOff = 0
		if need > w.stageCap {
			if w.stageDev != 0 {
				cuMemFree(w.stageDev)
				cuMemFreeHost(w.stageHost)
				w.stageDev, w.stageHost, w.stageCap = 0, nil, 0
			}
			cp := max(need, 2*w.stageCap, stageMinBytes)
			if err := checkCU("", "cuMemHostAlloc(staging)", cuMemHostAlloc(&w.stageHost, cp, 0)); err != nil {
				return 0, err
			}
			if err := checkCU("", "cuMemAlloc(staging)", cuMemAlloc(&w.stageDev, cp)); err != nil {
				return 0, err
			}
			w.stageCap = cp
		}
	}
	host := unsafe.Slice((*int32)(unsafe.Add(w.stageHost, w.stageOff)), len(idx))
	copy(host, idx)
	dst := w.stageDev + w.stageOff
	if err := checkCU("", "cuMemcpyHtoDAsync", cuMemcpyHtoDAsync(dst, uintptr(unsafe.Add(w.stageHost, w.stageOff)), n, w.stream)); err != nil {
		return 0, err
	}
	w.stageOff += need
	return dst, nil
}

// launch runs kernel name on a gx×gy grid of block threads with the
// arguments a (built by the caller).
func (w *worker) launch(name string, gx, gy, block uint32, a *argPack) error {
	return w.launchShared(name, gx, gy, block, 0, a)
}

// launchShared is launch with shmem bytes of dynamic shared memory.
func (w *worker) launchShared(name string, gx, gy, block, shmem uint32, a *argPack) error {
	if gx == 0 || gy == 0 {
		return nil
	}
	if a.err != nil {
		return fmt.Errorf("kernel %s: %w", name, a.err)
	}
	fn, ok := w.fn[name]
	if !ok {
		return fmt.Errorf("kernel %s not loaded", name)
	}
	w.args.slots, w.args.n = a.slots, a.n
	return checkCU("kernel "+name, "cuLaunchKernel", launch(fn, gx, gy, 1, block, shmem, w.stream, w.args))
}
