package data

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeTree creates files (relative path -> content) under a new temp dir.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func byteString(tk Tokens) string { return ByteTokenizer{}.Decode(tk.Ints()) }

func load(t *testing.T, s Source, tok Tokenizer) *Dataset {
	t.Helper()
	if s.CacheDir == "" {
		s.CacheDir = t.TempDir()
	}
	ds, err := Load(context.Background(), s, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

var tree = map[string]string{
	"b.go":           "package b\n",
	"a.go":           "package a\n",
	"a/z.go":         "package z\n",
	"sub/c.go":       "package c\n",
	"sub/notes.txt":  "not go\n",
	"sub/deep/e.go":  "package e\n",
	"vendor/v.go":    "package v\n",
	".git/hidden.go": "package hidden\n",
}

func TestLoadDirGlobs(t *testing.T) {
	root := writeTree(t, tree)
	cases := []struct {
		include, exclude []string
		want             string
	}{
		// Sorted by relative path; each file followed by the '\n' separator.
		{nil, nil, "package a\n\npackage z\n\npackage b\n\npackage c\n\npackage e\n\npackage v\n\n"},
		{nil, []string{"vendor/**"}, "package a\n\npackage z\n\npackage b\n\npackage c\n\npackage e\n\n"},
		{[]string{"sub/**/*.go"}, nil, "package c\n\npackage e\n\n"},
		{[]string{"*.txt", "b.go"}, nil, "package b\n\nnot go\n\n"},
	}
	for _, c := range cases {
		ds := load(t, Source{Path: root, Include: c.include, Exclude: c.exclude, ValFraction: -1}, ByteTokenizer{})
		if got := byteString(ds.Train); got != c.want {
			t.Errorf("include %q exclude %q: got %q, want %q", c.include, c.exclude, got, c.want)
		}
		if ds.Val.Len() != 0 {
			t.Errorf("valFraction -1 gave %d validation tokens", ds.Val.Len())
		}
	}
}

func TestLoadErrors(t *testing.T) {
	root := writeTree(t, tree)
	ctx := context.Background()
	cache := t.TempDir()
	if err := os.Symlink(filepath.Join(root, "missing"), filepath.Join(root, "broken.go")); err != nil {
		t.Fatal(err)
	}
	short := writeTree(t, map[string]string{"s.txt": "short text"})
	cases := []struct {
		name string
		src  Source
		tok  Tokenizer
		want []string
	}{
		{"missing path", Source{Path: filepath.Join(root, "nope")}, ByteTokenizer{}, []string{"data.path", "nope", "no such file"}},
		{"no match", Source{Path: root, Include: []string{"*.rs"}, Exclude: []string{"x"}}, ByteTokenizer{}, []string{"empty corpus", root, `"*.rs"`, `"x"`}},
		{"unreadable", Source{Path: root, Include: []string{"broken.go"}}, ByteTokenizer{}, []string{"broken.go"}},
		{"tokenizer mismatch", Source{Path: root, Tokenizer: "gpt2"}, ByteTokenizer{}, []string{"data.tokenizer is \"gpt2\"", "\"byte\""}},
		{"invalid", Source{Path: root, ValFraction: 2}, ByteTokenizer{}, []string{"data.valFraction"}},
		{"shorter than a window", Source{Path: short, Include: []string{"*.txt"}, ValFraction: -1, SeqLen: 64}, ByteTokenizer{}, []string{"11 training tokens", "one window of 65"}},
		{"too short to split", Source{Path: short, Include: []string{"*.txt"}, SeqLen: 8}, ByteTokenizer{}, []string{short, "too few", "9 tokens"}},
	}
	for _, c := range cases {
		c.src.CacheDir = cache
		_, err := Load(ctx, c.src, c.tok, nil)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
	}
}

func TestValSplitByFile(t *testing.T) {
	files := map[string]string{}
	for i := 0; i < 300; i++ {
		files[fmt.Sprintf("d%d/f%03d.txt", i%7, i)] = fmt.Sprintf("file %d\n", i)
	}
	root := writeTree(t, files)
	src := Source{Path: root, Include: []string{"*.txt"}, ValFraction: 0.2}
	ds := load(t, src, ByteTokenizer{})

	var wantTrain, wantVal strings.Builder
	rels := make([]string, 0, len(files))
	for rel := range files {
		rels = append(rels, rel)
	}
	slices.Sort(rels)
	nval := 0
	for _, rel := range rels {
		if isVal(rel, 0.2) {
			wantVal.WriteString(files[rel] + "\n")
			nval++
		} else {
			wantTrain.WriteString(files[rel] + "\n")
		}
	}
	if nval < 30 || nval > 90 {
		t.Fatalf("%d of 300 files in validation at fraction 0.2", nval)
	}
	if byteString(ds.Train) != wantTrain.String() || byteString(ds.Val) != wantVal.String() {
		t.Fatal("split does not follow the per-file hash")
	}

	// Adding a file does not move any other file across the split.
	os.WriteFile(filepath.Join(root, "new.txt"), []byte("a new file\n"), 0o644)
	ds2 := load(t, src, ByteTokenizer{})
	got := strings.ReplaceAll(byteString(ds2.Val)+byteString(ds2.Train), "a new file\n\n", "")
	if got != wantVal.String()+wantTrain.String() {
		t.Fatal("adding a file changed the split of the others")
	}
}

func TestValSplitFallback(t *testing.T) {
	text, err := os.ReadFile("../../examples/tiny.txt")
	if err != nil {
		t.Fatal(err)
	}
	ds := load(t, Source{Path: "../../examples/tiny.txt", SeqLen: 64}, ByteTokenizer{})
	n := len(text) + 1 // plus the separator
	if ds.Val.Len() != 65 || ds.Train.Len() != n-65 {
		t.Fatalf("single file: train %d val %d, want %d and 65 (one window)", ds.Train.Len(), ds.Val.Len(), n-65)
	}
	if byteString(ds.Train)+byteString(ds.Val) != string(text)+"\n" {
		t.Fatal("tail split lost or reordered tokens")
	}
	ds = load(t, Source{Path: "../../examples/tiny.txt", ValFraction: 0.1, SeqLen: 8}, ByteTokenizer{})
	if want := (n + 9) / 10; ds.Val.Len() != want {
		t.Fatalf("valFraction 0.1 of %d tokens: val %d, want %d", n, ds.Val.Len(), want)
	}
}

func TestCacheReuseAndRebuild(t *testing.T) {
	root := writeTree(t, tree)
	var log bytes.Buffer
	src := Source{Path: root, CacheDir: t.TempDir()}
	ctx := context.Background()
	first, err := Load(ctx, src, ByteTokenizer{}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Tokenized || !strings.Contains(log.String(), "tokenize byte") {
		t.Fatalf("first load: tokenized=%v progress %q", first.Tokenized, log.String())
	}
	second, err := Load(ctx, src, ByteTokenizer{}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if second.Tokenized || second.CachePath != first.CachePath {
		t.Fatal("second load tokenised again instead of reading the cache")
	}
	if byteString(second.Train) != byteString(first.Train) || byteString(second.Val) != byteString(first.Val) {
		t.Fatal("cached tokens differ")
	}

	// Damage the cache: one flipped byte is caught by the CRC.
	b, _ := os.ReadFile(first.CachePath)
	b[len(b)-1] ^= 0xff
	os.WriteFile(first.CachePath, b, 0o644)
	log.Reset()
	third, err := Load(ctx, src, ByteTokenizer{}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if !third.Tokenized || !strings.Contains(log.String(), "rebuilding") || !strings.Contains(log.String(), "checksum mismatch") {
		t.Fatalf("corrupt cache: tokenized=%v progress %q", third.Tokenized, log.String())
	}
	if byteString(third.Train) != byteString(first.Train) {
		t.Fatal("rebuilt tokens differ")
	}
	// Truncated cache.
	os.WriteFile(first.CachePath, b[:40], 0o644)
	if ds, err := Load(ctx, src, ByteTokenizer{}, nil); err != nil || !ds.Tokenized {
		t.Fatalf("truncated cache: %v", err)
	}

	// Changing a file changes the key.
	p := filepath.Join(root, "a.go")
	os.WriteFile(p, []byte("package a // changed\n"), 0o644)
	os.Chtimes(p, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	fourth, err := Load(ctx, src, ByteTokenizer{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !fourth.Tokenized || fourth.CachePath == first.CachePath || !strings.Contains(byteString(fourth.Train)+byteString(fourth.Val), "changed") {
		t.Fatal("a modified file did not invalidate the cache")
	}
}

func TestLoadBPEDeterministic(t *testing.T) {
	files := map[string]string{}
	for i := 0; i < 40; i++ {
		files[fmt.Sprintf("f%02d.go", i)] = fmt.Sprintf("package p%d\n\nfunc F%d() int { return %d * 2 } // héllo\n", i, i, i)
	}
	root := writeTree(t, files)
	tok, err := NewTokenizer("gpt2")
	if err != nil {
		t.Fatal(err)
	}
	src := Source{Path: root, ValFraction: -1}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(1)
	one := load(t, src, tok)
	runtime.GOMAXPROCS(4)
	four := load(t, src, tok)
	if !slices.Equal(one.Train.Ints(), four.Train.Ints()) {
		t.Fatal("token stream depends on GOMAXPROCS")
	}
	var want []int32
	for i := 0; i < 40; i++ {
		want = append(want, tok.Encode(files[fmt.Sprintf("f%02d.go", i)])...)
		want = append(want, 50256)
	}
	if !slices.Equal(one.Train.Ints(), want) {
		t.Fatal("gpt2 corpus is not the per-file encodings joined by <|endoftext|>")
	}
	if one.Train.width != 2 {
		t.Fatalf("gpt2 tokens stored in %d bytes, want 2", one.Train.width)
	}
}

func TestLoadJSONL(t *testing.T) {
	root := writeTree(t, map[string]string{
		"a.jsonl":      `{"text": "hello", "id": 1}` + "\n\n" + `{"text":"wörld\n"}` + "\n",
		"b.jsonl":      `{"body": "x"}` + "\n",
		"bad/c.jsonl":  `{"text": "ok"}` + "\n" + `{"text": "ok"}` + "\n" + `{"text": oops}` + "\n",
		"bad/d.jsonl":  `{"text": 5}` + "\n",
		"bad/e.jsonl":  `{"body": "x"}` + "\n",
		"bad/f.jsonl":  `["text"]`,
		"good/z.jsonl": `{"text":"a"}` + "\n" + `{"text":"b"}`,
	})
	ds := load(t, Source{Kind: KindJSONL, Path: filepath.Join(root, "a.jsonl"), ValFraction: -1}, ByteTokenizer{})
	if got := byteString(ds.Train); got != "hello\nwörld\n\n" {
		t.Fatalf("jsonl tokens %q", got)
	}
	ds = load(t, Source{Kind: KindJSONL, Path: filepath.Join(root, "good"), ValFraction: -1}, ByteTokenizer{})
	if got := byteString(ds.Train); got != "a\nb\n" {
		t.Fatalf("jsonl dir without trailing newline: %q", got)
	}
	ds = load(t, Source{Kind: KindJSONL, Path: filepath.Join(root, "b.jsonl"), TextField: "body", ValFraction: -1}, ByteTokenizer{})
	if got := byteString(ds.Train); got != "x\n" {
		t.Fatalf("textField body: %q", got)
	}
	for file, want := range map[string]string{
		"bad/c.jsonl": "c.jsonl:3: malformed JSON",
		"bad/d.jsonl": `d.jsonl:1: field "text" is not a string`,
		"bad/e.jsonl": `e.jsonl:1: object has no "text" field`,
		"bad/f.jsonl": "f.jsonl:1: malformed JSON",
	} {
		_, err := Load(context.Background(), Source{Kind: KindJSONL, Path: filepath.Join(root, file), CacheDir: t.TempDir()}, ByteTokenizer{}, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", file, err, want)
		}
	}
}

func TestLoadTokenFile(t *testing.T) {
	ids := make([]int32, 1000)
	for i := range ids {
		ids[i] = int32(i % 300)
	}
	tk, _ := NewTokens(ids, 300)
	p := filepath.Join(t.TempDir(), "corpus.tok")
	if err := WriteTokenFile(p, tk); err != nil {
		t.Fatal(err)
	}
	gpt2, _ := NewTokenizer("gpt2")
	ds := load(t, Source{Kind: KindTokens, Path: p, ValFraction: 0.1, SeqLen: 16}, gpt2)
	if ds.Train.Len() != 900 || ds.Val.Len() != 100 || !slices.Equal(append(ds.Train.Ints(), ds.Val.Ints()...), ids) {
		t.Fatalf("token corpus split %d/%d", ds.Train.Len(), ds.Val.Len())
	}
	_, err := Load(context.Background(), Source{Kind: KindTokens, Path: p}, ByteTokenizer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "vocab size 300 exceeds tokenizer byte's 256") {
		t.Fatalf("token file with a larger vocab: %v", err)
	}
	os.WriteFile(p, []byte("TERNTOKS"), 0o644)
	_, err = Load(context.Background(), Source{Kind: KindTokens, Path: p}, gpt2, nil)
	if err == nil || !strings.Contains(err.Error(), "truncated header") || !strings.Contains(err.Error(), p) {
		t.Fatalf("corrupt token corpus: %v", err)
	}
}

func TestLoadGoSourceTree(t *testing.T) {
	if _, err := GoSourceRoot(context.Background()); err != nil {
		t.Skipf("no Go source tree on this machine: %v", err)
	}
	cache := t.TempDir()
	start := time.Now()
	ds, err := Load(context.Background(), Source{CacheDir: cache, SeqLen: 256}, ByteTokenizer{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	if ds.Files < 1000 || ds.Train.Len() < 10<<20 || ds.Val.Len() < ds.Train.Len()/500 {
		t.Fatalf("Go source tree: %d files, %d train and %d val tokens", ds.Files, ds.Train.Len(), ds.Val.Len())
	}
	start = time.Now()
	again, err := Load(context.Background(), Source{CacheDir: cache, SeqLen: 256}, ByteTokenizer{}, nil)
	if err != nil || again.Tokenized {
		t.Fatalf("second load: tokenized=%v err=%v", again.Tokenized, err)
	}
	t.Logf("%d files, %d train + %d val tokens; tokenise %v, cached load %v", ds.Files, ds.Train.Len(), ds.Val.Len(), first, time.Since(start))
}

func TestConcurrentLoadsTokeniseOnce(t *testing.T) {
	root := writeTree(t, tree)
	src := Source{Path: root, CacheDir: t.TempDir()}
	const n = 4
	results := make(chan *Dataset, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			ds, err := Load(context.Background(), src, ByteTokenizer{}, nil)
			results <- ds
			errs <- err
		}()
	}
	built := 0
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if (<-results).Tokenized {
			built++
		}
	}
	if built != 1 {
		t.Fatalf("%d of %d concurrent loads tokenised, want 1", built, n)
	}
}

func TestLoadCancelled(t *testing.T) {
	root := writeTree(t, tree)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Load(ctx, Source{Path: root, CacheDir: t.TempDir()}, ByteTokenizer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("cancelled load: %v", err)
	}
}

func TestGoSourceRoot(t *testing.T) {
	fake := t.TempDir()
	os.Mkdir(filepath.Join(fake, "src"), 0o755)
	t.Setenv("GOROOT", fake)
	if d, err := GoSourceRoot(context.Background()); err != nil || d != filepath.Join(fake, "src") {
		t.Fatalf("GOROOT=%s: got %q, %v", fake, d, err)
	}
	// A GOROOT without src falls through to the go command.
	t.Setenv("GOROOT", t.TempDir())
	d, err := GoSourceRoot(context.Background())
	if err != nil {
		t.Fatalf("fallback: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d, "runtime", "proc.go")); err != nil {
		t.Fatalf("fallback found %s, which is not the Go source tree", d)
	}
}

// upperTokenizer is a tokenizer this package does not define: Load must
// accept any implementation, key its cache by the tokenizer's name, and
// (having no EndOfText method) join documents with no separator.
type upperTokenizer struct{ ByteTokenizer }

func (upperTokenizer) Name() string { return "upper" }
func (upperTokenizer) Encode(s string) []int32 {
	return ByteTokenizer{}.Encode(strings.ToUpper(s))
}

func TestLoadCustomTokenizer(t *testing.T) {
	root := writeTree(t, map[string]string{"a.go": "package a\n"})
	cache := t.TempDir()
	up := load(t, Source{Path: root, CacheDir: cache, ValFraction: -1}, upperTokenizer{})
	plain := load(t, Source{Path: root, CacheDir: cache, ValFraction: -1}, ByteTokenizer{})
	if byteString(up.Train) != "PACKAGE A\n" || byteString(plain.Train) != "package a\n\n" || !plain.Tokenized {
		t.Fatalf("custom tokenizer: %q, byte: %q (tokenized %v)", byteString(up.Train), byteString(plain.Train), plain.Tokenized)
	}
}
