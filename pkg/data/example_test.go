package data_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ternml/tern/pkg/data"
)

// Load the tiny example text, then draw step 0's first microbatch for DP
// rank 1 of 2. The windows are a pure function of the arguments, so this
// output is fixed.
func Example() {
	cache, err := os.MkdirTemp("", "tern-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(cache)

	tok, _ := data.NewTokenizer("byte")
	const seqLen = 24
	src := data.Source{Path: "../../examples/tiny.txt", CacheDir: cache, SeqLen: seqLen}
	ds, err := data.Load(context.Background(), src, tok, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	s, err := data.NewSampler(ds.Train, seqLen, 1234)
	if err != nil {
		fmt.Println(err)
		return
	}
	const B = 2
	inputs, targets := make([]int32, B*seqLen), make([]int32, B*seqLen)
	if err := s.Batch(0, 1, 2, 0, 1, B, inputs, targets); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("train %d tokens, val %d, %d windows\n", ds.Train.Len(), ds.Val.Len(), s.NumWindows())
	for r := 0; r < B; r++ {
		fmt.Printf("inputs  %q\ntargets %q\n", tok.Decode(inputs[r*seqLen:(r+1)*seqLen]), tok.Decode(targets[r*seqLen:(r+1)*seqLen]))
	}
	c := s.Cursor(1)
	step, err := s.Resume(c)
	fmt.Println("resume at step", step, err)
	// Output:
	// train 1503 tokens, val 25, 62 windows
	// inputs  "n the cedar valleys of t"
	// targets " the cedar valleys of th"
	// inputs  "spark of sunset under it"
	// targets "park of sunset under its"
	// resume at step 1 <nil>
}
