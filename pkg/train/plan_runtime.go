package train

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/spec"
)

// The process overhead a plan adds to the training state, from measurements
// of `ternctl train -o json` (peak_rss_bytes minus the summary's memory
// lines) on linux/amd64, Go 1.26, the binary built by scripts/bench:
const (
	// goBaseBytes is a training process with a negligible model (the tiny
	// preset, byte tokenizer): the Go runtime, the binary's touched text and
	// data (cobra, zap, gRPC, gonum are linked in), goroutine stacks of the
	// worker pool and the heap's metadata.
	goBaseBytes = 12 << 20
	// bpeTableBytes is what loading a BPE tokenizer's rank tables adds to
	// peak RSS (decoding the embedded tables, then the maps they become),
	// measured with data.NewTokenizer alone.
	gpt2TableBytes   = 9 << 20
	cl100kTableBytes = 19 << 20
	// gemm packing panels (pkg/tensor/gemm_blocked.go): a pooled job
	// packs at most msRowsMax×kcMax of A and kcMax×ncMax of B.
	gemmKC, gemmMSRows, gemmNC = 256, 4096, 4080
	// tokeniseBatchBytes is the text pkg/data holds while tokenising (its
	// batchBytes).
	tokeniseBatchBytes = 16 << 20
)

// RuntimeBytes is the process overhead of training c with microbatches of
// b×t tokens that the state lines of a plan do not cover:
//
//	goBaseBytes + tokenizer tables + 4·kc·(min(L, 4096) + min(L, 4080)),
//	kc = min(256, L), L = max(B·T, vocab, dim, ffn)
//
// The last term is the GEMM's packed A block and B panel at their largest
// for this model's products (every product has its dimensions among
// B·T, vocab, dim and ffn); the pool keeps them between calls.
func RuntimeBytes(c model.Config, b, t int) int64 {
	n := int64(goBaseBytes)
	switch c.Tokenizer {
	case data.TokenizerGPT2, data.TokenizerR50k:
		n += gpt2TableBytes
	case data.TokenizerCL100k:
		n += cl100kTableBytes
	}
	l := max(b*t, c.Vocab, c.Dim, c.FFN)
	kc := min(gemmKC, l)
	n += 4 * int64(kc) * int64(min(l, gemmMSRows)+min(l, gemmNC))
	return n
}

// Ways a plan estimates the corpus held in memory (MemoryPlan.DataSource).
const (
	DataFromText      = "inline-text" // kind text with the byte tokenizer: one token per byte
	DataFromFiles     = "file-size"   // byte tokenizer: one token per byte of the files
	DataFromTokenFile = "token-file"  // kind tokens: the file's size
	DataUnknown       = "unknown"     // a BPE tokenizer over text: not known without tokenising
)

// estimateData predicts the tokenised corpus (training plus validation) the
// run holds, in bytes, without reading the corpus: a token file's size, or
// for the byte tokenizer the text's bytes plus one separator per document.
// Anything else (a BPE tokenizer over text, globs with **) is unknown (0).
func estimateData(d *spec.DataSpec, c model.Config) (int64, string) {
	width := int64(data.TokenWidth(c.Vocab))
	tok := d.Tokenizer
	if tok == "" {
		tok = c.Tokenizer
	}
	switch d.Kind {
	case "tokens":
		fi, err := os.Stat(d.Path)
		if err != nil {
			return 0, DataUnknown
		}
		return fi.Size(), DataFromTokenFile
	case "text":
		if tok != data.TokenizerByte {
			return 0, DataUnknown
		}
		return width * int64(len(d.Text)+1), DataFromText
	case "dir", "":
		if tok != data.TokenizerByte {
			return 0, DataUnknown
		}
		bytes, files, ok := corpusBytes(d)
		if !ok {
			return 0, DataUnknown
		}
		return width * (bytes + files), DataFromFiles
	}
	return 0, DataUnknown
}

// corpusBytes sums the sizes of the files a dir corpus reads (the rules of
// data.Load's file listing: hidden directories skipped, include globs on the
// base name or, with '/', on the relative path). ok is false when a glob
// needs ** or the tree cannot be read.
func corpusBytes(d *spec.DataSpec) (bytes, files int64, ok bool) {
	root := d.Path
	if root == "" {
		r, err := data.GoSourceRoot(context.Background())
		if err != nil {
			return 0, 0, false
		}
		root = r
	}
	fi, err := os.Stat(root)
	if err != nil {
		return 0, 0, false
	}
	if !fi.IsDir() {
		return fi.Size(), 1, true
	}
	include := d.Include
	if len(include) == 0 {
		include = []string{"*.go"}
	}
	for _, g := range append(append([]string(nil), include...), d.Exclude...) {
		if strings.Contains(g, "**") {
			return 0, 0, false
		}
	}
	match := func(globs []string, rel string) bool {
		for _, g := range globs {
			name := rel
			if !strings.Contains(g, "/") {
				name = path.Base(rel)
			}
			if m, _ := path.Match(g, name); m {
				return true
			}
		}
		return false
	}
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if p != root && strings.HasPrefix(e.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		r, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(r)
		if !match(include, rel) || match(d.Exclude, rel) {
			return nil
		}
		info, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("corpus file %s: %w", p, err)
		}
		if info.Mode().IsRegular() {
			bytes += info.Size()
			files++
		}
		return nil
	})
	return bytes, files, err == nil && files > 0
}
