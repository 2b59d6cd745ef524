package data

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// goSample returns about 1 MB of Go source from the standard library.
func goSample(b *testing.B) string {
	root, err := GoSourceRoot(context.Background())
	if err != nil {
		b.Skipf("no Go source tree: %v", err)
	}
	matches, _ := filepath.Glob(filepath.Join(root, "net", "http", "*.go"))
	var text []byte
	for _, m := range matches {
		c, _ := os.ReadFile(m)
		text = append(text, c...)
		if len(text) > 1<<20 {
			break
		}
	}
	return string(text)
}

// BenchmarkEncode measures single-goroutine tokenizer throughput (MB/s of
// text); Load runs one such encoder per core.
func BenchmarkEncode(b *testing.B) {
	text := goSample(b)
	for _, name := range []string{"byte", "gpt2", "cl100k_base"} {
		tok, err := NewTokenizer(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for i := 0; i < b.N; i++ {
				tok.Encode(text)
			}
		})
	}
}

// BenchmarkBatch measures drawing one microbatch of 8 x 1024 tokens.
func BenchmarkBatch(b *testing.B) {
	ids := make([]int32, 1<<22)
	for i := range ids {
		ids[i] = int32(i % 50257)
	}
	tk, _ := NewTokens(ids, 50257)
	s, _ := NewSampler(tk, 1024, 1)
	in, tg := make([]int32, 8*1024), make([]int32, 8*1024)
	b.SetBytes(int64(len(in)) * 4)
	for i := 0; i < b.N; i++ {
		if err := s.Batch(int64(i), 0, 4, 0, 2, 8, in, tg); err != nil {
			b.Fatal(err)
		}
	}
}
