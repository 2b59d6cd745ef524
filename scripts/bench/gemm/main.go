// Command gemm measures tensor.Gemm throughput for each available backend at
// GOMAXPROCS 1 and 2 and prints a markdown table of median GFLOP/s.
//
//	go run ./scripts/bench/gemm [-reps 5] [-mintime 1s] [-layout nt]
//
// Shapes are M×N×K; the layout flag picks which operands are transposed
// ("nt" is the forward pass x·Wᵀ, "tn" the weight gradient). After a warm-up
// call, each repetition runs every backend in turn until mintime has passed
// (at least one call); cells report the median repetition.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ternml/tern/pkg/tensor"
)

type shape struct{ m, n, k int }

// openblasCooldown is the pause after each OpenBLAS measurement; its worker
// threads busy-wait up to 2^28 cycles (THREAD_TIMEOUT) after a call.
const openblasCooldown = 300 * time.Millisecond

func main() {
	reps := flag.Int("reps", 7, "repetitions per cell (median reported)")
	minTime := flag.Duration("mintime", 300*time.Millisecond, "minimum time per backend per repetition")
	layout := flag.String("layout", "nt", "operand layout: nn, nt (forward x·Wᵀ), tn (weight gradient)")
	shapesFlag := flag.String("shapes", "1024x1024x1024,512x768x768,512x3072x768,512x50257x768", "comma-separated MxNxK")
	threads := flag.String("threads", "1,2", "comma-separated GOMAXPROCS values")
	only := flag.String("backends", "", "comma-separated backends to run (default: all available)")
	beta := flag.Float64("beta", 0, "beta of C = A·B + beta·C (1 measures the accumulating weight-gradient form)")
	flag.Parse()
	if err := run(*reps, *minTime, *layout, *shapesFlag, *threads, *only, float32(*beta)); err != nil {
		fmt.Fprintln(os.Stderr, "gemm bench:", err)
		os.Exit(1)
	}
}

func run(reps int, minTime time.Duration, layout, shapesFlag, threadsFlag, only string, beta float32) error {
	var transA, transB bool
	switch layout {
	case "nn":
	case "nt":
		transB = true
	case "tn":
		transA = true
	default:
		return fmt.Errorf("-layout %q: allowed are nn, nt, tn", layout)
	}
	var shapes []shape
	for _, s := range strings.Split(shapesFlag, ",") {
		var sh shape
		if _, err := fmt.Sscanf(s, "%dx%dx%d", &sh.m, &sh.n, &sh.k); err != nil {
			return fmt.Errorf("-shapes entry %q: want MxNxK: %w", s, err)
		}
		shapes = append(shapes, sh)
	}
	var threads []int
	for _, s := range strings.Split(threadsFlag, ",") {
		var t int
		if _, err := fmt.Sscanf(s, "%d", &t); err != nil || t < 1 {
			return fmt.Errorf("-threads entry %q: want a positive integer", s)
		}
		threads = append(threads, t)
	}
	backends := tensor.GemmBackends()
	if only != "" {
		backends = strings.Split(only, ",")
		for _, be := range backends {
			if err := tensor.SetGemmBackend(be); err != nil {
				return fmt.Errorf("-backends: %w", err)
			}
		}
	}
	if only == "" && !slices.Contains(backends, tensor.BackendOpenBLAS) {
		fmt.Fprintln(os.Stderr, "note: openblas column missing:", tensor.SetGemmBackend(tensor.BackendOpenBLAS))
	}
	fmt.Printf("GEMM GFLOP/s, median of %d interleaved repetitions of ≥%v, layout %s, beta %g (%s/%s, %s)\n\n", reps, minTime, layout, beta, runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02"))
	hdr := "| M×N×K | threads |"
	sep := "| --- | ---: |"
	for _, b := range backends {
		hdr += " " + b + " |"
		sep += " ---: |"
	}
	if slices.Contains(backends, tensor.BackendOpenBLAS) && slices.Contains(backends, tensor.BackendAsm) {
		hdr += " asm/openblas |"
		sep += " ---: |"
	}
	fmt.Println(hdr)
	fmt.Println(sep)
	for _, sh := range shapes {
		a, b, c := operands(sh)
		for _, t := range threads {
			runtime.GOMAXPROCS(t)
			row := fmt.Sprintf("| %dx%dx%d | %d |", sh.m, sh.n, sh.k, t)
			// Backends take turns within each repetition, so a burst of
			// load from other processes hits all of them alike; the ratio
			// column is the median of the per-repetition ratios.
			rates := map[string][]float64{}
			var ratios []float64
			for r := 0; r < reps; r++ {
				for _, be := range backends {
					if err := tensor.SetGemmBackend(be); err != nil {
						return err
					}
					if r == 0 {
						call(sh, transA, transB, beta, a, b, c) // warm-up: page in, grow pooled buffers
					}
					rates[be] = append(rates[be], measure(sh, transA, transB, beta, a, b, c, minTime))
					if be == tensor.BackendOpenBLAS {
						// OpenBLAS's idle threads keep spinning for a while
						// after a call; let them go to sleep so they do not
						// slow the next backend's measurement.
						time.Sleep(openblasCooldown)
					}
				}
				if o := rates[tensor.BackendOpenBLAS]; len(o) > 0 && len(rates[tensor.BackendAsm]) > 0 {
					ratios = append(ratios, rates[tensor.BackendAsm][r]/o[r])
				}
			}
			for _, be := range backends {
				row += fmt.Sprintf(" %.1f |", median(rates[be]))
			}
			if len(ratios) > 0 {
				row += fmt.Sprintf(" %.0f%% |", 100*median(ratios))
			}
			fmt.Println(row)
		}
	}
	return nil
}

func operands(sh shape) (a, b, c []float32) {
	r := rand.New(rand.NewPCG(1, 2))
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	return fill(sh.m * sh.k), fill(sh.k * sh.n), make([]float32, sh.m*sh.n)
}

func lds(sh shape, transA, transB bool) (lda, ldb int) {
	lda, ldb = sh.k, sh.n
	if transA {
		lda = sh.m
	}
	if transB {
		ldb = sh.k
	}
	return lda, ldb
}

func call(sh shape, transA, transB bool, beta float32, a, b, c []float32) {
	lda, ldb := lds(sh, transA, transB)
	tensor.Gemm(transA, transB, sh.m, sh.n, sh.k, 1, a, lda, b, ldb, beta, c, sh.n)
}

// measure returns GFLOP/s over as many calls as fit in minTime (at least one).
func measure(sh shape, transA, transB bool, beta float32, a, b, c []float32, minTime time.Duration) float64 {
	flop := 2 * float64(sh.m) * float64(sh.n) * float64(sh.k)
	start := time.Now()
	calls := 0
	for time.Since(start) < minTime || calls == 0 {
		call(sh, transA, transB, beta, a, b, c)
		calls++
	}
	return flop * float64(calls) / time.Since(start).Seconds() / 1e9
}

func median(x []float64) float64 {
	x = slices.Clone(x)
	slices.Sort(x)
	if len(x)%2 == 1 {
		return x[len(x)/2]
	}
	return (x[len(x)/2-1] + x[len(x)/2]) / 2
}
