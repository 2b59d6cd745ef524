package tensor

// Token embedding over a row shard [lo, hi) of the vocabulary (Vocabulary
// Parallelism, Yeung et al. 2024): a shard writes the rows of the tokens it
// holds and zeros elsewhere, so summing the outputs of all shards gives the
// full lookup exactly (x + 0 = x).
//
//	forward:  out[n] = W[tok[n]-lo]         if lo <= tok[n] < hi, else 0
//	backward: dW[tok[n]-lo] += dOut[n]      for the same n

// embedColGrain is the column chunk of the embedding backward pass.
const embedColGrain = 64

// EmbeddingForward implements Device.
func (CPU) EmbeddingForward(out, w []float32, lo, hi, d int, tokens []int32) {
	need("EmbeddingForward", "out", out, len(tokens)*d)
	need("EmbeddingForward", "w", w, (hi-lo)*d)
	ParallelFor(len(tokens), rowGrain(d), func(a, b int) {
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

// EmbeddingBackward implements Device. Tokens repeat, so rows cannot be
// split across goroutines; columns can: each chunk owns a column range and
// walks the tokens in order, which keeps the sum order fixed.
func (CPU) EmbeddingBackward(dw, dout []float32, lo, hi, d int, tokens []int32) {
	need("EmbeddingBackward", "dout", dout, len(tokens)*d)
	need("EmbeddingBackward", "dw", dw, (hi-lo)*d)
	ParallelFor(d, embedColGrain, func(c0, c1 int) {
		for n, tok := range tokens {
			t := int(tok)
			if t < lo || t >= hi {
				continue
			}
			dst := dw[(t-lo)*d+c0 : (t-lo)*d+c1]
			src := dout[n*d+c0 : n*d+c1]
			for i := range dst {
				dst[i] += src[i]
			}
		}
	})
}
