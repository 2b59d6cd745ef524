// Command gemm measures tensor.Gemm throughput for each available backend at
// GOMAXPROCS 1 and 2 and prints a markdown table of median GFLOP/s.
//
//	go run ./scripts/bench/gemm [-reps 5] [-mintime 1s] [-layout nt]
//
// Shapes are M×N×K; the layout flag picks which operands are transposed
// ("nt" is the forward pass x·Wᵀ). Each cell runs the GEMM until mintime has
// passed, reps times after a warm-up, and reports the median repetition.
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

func main() {
	reps := flag.Int("reps", 5, "repetitions per cell (median reported)")
	minTime := flag.Duration("mintime", time.Second, "minimum time per repetition")
	layout := flag.String("layout", "nt", "operand layout: nn, nt (forward x·Wᵀ), tn (weight gradient)")
	shapesFlag := flag.String("shapes", "1024x1024x1024,512x768x768,512x3072x768,512x50257x768", "comma-separated MxNxK")
	threads := flag.String("threads", "1,2", "comma-separated GOMAXPROCS values")
	flag.Parse()
	if err := run(*reps, *minTime, *layout, *shapesFlag, *threads); err != nil {
		fmt.Fprintln(os.Stderr, "gemm bench:", err)
		os.Exit(1)
	}
}

func run(reps int, minTime time.Duration, layout, shapesFlag, threadsFlag string) error {
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
	if !slices.Contains(backends, tensor.BackendOpenBLAS) {
		fmt.Fprintln(os.Stderr, "note: openblas column missing:", tensor.SetGemmBackend(tensor.BackendOpenBLAS))
	}
	fmt.Printf("GEMM GFLOP/s, median of %d × ≥%v, layout %s (%s/%s, %s)\n\n", reps, minTime, layout, runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02"))
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
		a, b, c := operands(sh, transA, transB)
		for _, t := range threads {
			runtime.GOMAXPROCS(t)
			row := fmt.Sprintf("| %dx%dx%d | %d |", sh.m, sh.n, sh.k, t)
			res := map[string]float64{}
			for _, be := range backends {
				if err := tensor.SetGemmBackend(be); err != nil {
					return err
				}
				g := measure(sh, transA, transB, a, b, c, reps, minTime)
				res[be] = g
				row += fmt.Sprintf(" %.1f |", g)
			}
			if o, ok := res[tensor.BackendOpenBLAS]; ok && o > 0 {
				if s, ok := res[tensor.BackendAsm]; ok {
					row += fmt.Sprintf(" %.0f%% |", 100*s/o)
				}
			}
			fmt.Println(row)
		}
	}
	return nil
}

func operands(sh shape, transA, transB bool) (a, b, c []float32) {
	r := rand.New(rand.NewPCG(1, 2))
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	_ = transA
	_ = transB
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

// measure returns the median GFLOP/s over reps timed repetitions.
func measure(sh shape, transA, transB bool, a, b, c []float32, reps int, minTime time.Duration) float64 {
	lda, ldb := lds(sh, transA, transB)
	call := func() {
		tensor.Gemm(transA, transB, sh.m, sh.n, sh.k, 1, a, lda, b, ldb, 0, c, sh.n)
	}
	call() // warm-up: page in operands, grow pooled buffers
	flop := 2 * float64(sh.m) * float64(sh.n) * float64(sh.k)
	var rates []float64
	for r := 0; r < reps; r++ {
		start := time.Now()
		calls := 0
		for time.Since(start) < minTime || calls == 0 {
			call()
			calls++
		}
		rates = append(rates, flop*float64(calls)/time.Since(start).Seconds()/1e9)
	}
	slices.Sort(rates)
	return rates[len(rates)/2]
}
