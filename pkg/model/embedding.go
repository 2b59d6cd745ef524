package model

import "github.com/ternml/tern/pkg/tensor"

// Token embedding over a row shard [lo, hi) of the vocabulary (Vocabulary
// Parallelism, Yeung et al. 2024): a shard writes the rows of the tokens it
// holds and zeros elsewhere, so summing the outputs of all shards gives the
// full lookup exactly (x + 0 = x).
//
//	forward:  out[n] = W[tok[n]-lo]         if lo <= tok[n] < hi, else 0
//	backward: dW[tok[n]-lo] += dOut[n]      for the same n

func embeddingForward(out, w []float32, lo, hi, d int, tokens []int32) {
	tensor.ParallelFor(len(tokens), rowGrain(d), func(a, b int) {
		for n := a; n < b; n++ {
			dst := out[n*d : (n+1)*d]
			t := int(tokens[n])
			if t < lo || t >= hi {
				clear(dst)
				continue
			}
			copy(dst, w[(t-lo)*d:(t-lo+1)*d])
		}
	})
}

// embeddingBackward scatters dOut into dW. Tokens repeat, so rows cannot be
// split across goroutines; columns can: each chunk owns a column range and
// walks the tokens in order, which keeps the sum order fixed.
func embeddingBackward(dw []float32, lo, hi, d int, tokens []int32, dOut []float32) {
	const colGrain = 64
	tensor.ParallelFor(d, colGrain, func(c0, c1 int) {
		for n, tok := range tokens {
			t := int(tok)
			if t < lo || t >= hi {
				continue
			}
			dst := dw[(t-lo)*d+c0 : (t-lo)*d+c1]
			src := dOut[n*d+c0 : n*d+c1]
			for i := range dst {
				dst[i] += src[i]
			}
		}
	})
}
