package data

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/ternml/tern/pkg/tensor"
)

// cacheFormat changes whenever the way a corpus becomes tokens changes
// (separators, split rule, file format), so old caches are never reused.
const cacheFormat = 1

// Tokenising reads documents in batches of about this many bytes (or
// batchDocs documents) and encodes a batch in parallel; the batch bounds
// the memory held as text.
const (
	batchBytes = 16 << 20
	batchDocs  = 512
)

// Dataset is a tokenised corpus split into training and validation streams.
type Dataset struct {
	Train, Val Tokens
	Tokenizer  string // name of the tokenizer the ids belong to
	Files      int    // corpus files read (1 for kind tokens)
	CachePath  string // the cached training tokens; "" for kind tokens
	Tokenized  bool   // true when this Load tokenised the corpus (no usable cache)
}

// corpusFile is one input file, with what identifies its version in the
// cache key.
type corpusFile struct {
	abs, rel string
	size     int64
	mtimeNs  int64
}

// docSpan is one document's place in the concatenated stream: tokens
// [start, end), separator included.
type docSpan struct {
	start, end int
	val        bool
}

// Load reads and tokenises the corpus src with tok, splits off validation,
// and returns both streams. Dir and jsonl corpora are tokenised once into a
// cache (src.CacheDir) keyed by everything that affects the tokens; later
// calls read the cache. A damaged cache is reported on progress and rebuilt.
// progress may be nil; it receives a one-line progress bar while tokenising.
//
// Documents are concatenated in path order (jsonl: path, then line order),
// each followed by DocSeparator(tok).
//
// Validation split: a document goes to validation when a hash of its
// relative path (jsonl: path and line number) falls below ValFraction, so the
// split depends neither on file order nor on which other files exist. When
// that leaves validation shorter than one window (SeqLen+1 tokens; 1 token
// when SeqLen is 0) or training empty, as with a single file, the last
// ValFraction of the token stream (at least one window) is held out instead.
func Load(ctx context.Context, src Source, tok Tokenizer, progress io.Writer) (*Dataset, error) {
	if tok == nil {
		return nil, errors.New("load corpus: no tokenizer")
	}
	if src.Tokenizer != "" && canonicalTokenizer(src.Tokenizer) != canonicalTokenizer(tok.Name()) {
		return nil, fmt.Errorf("data.tokenizer is %q but the corpus is being loaded with %q: make them agree", src.Tokenizer, tok.Name())
	}
	s := src.WithDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	// The tokenizer in hand decides the tokens (and the cache key), whether
	// or not the spec named it; it may be one this package does not define.
	s.Tokenizer = canonicalTokenizer(tok.Name())
	var ds *Dataset
	var err error
	if s.Kind == KindTokens {
		ds, err = loadTokenFile(s, tok)
	} else {
		ds, err = loadText(ctx, s, tok, progress)
	}
	if err != nil {
		return nil, err
	}
	if w := minWindow(s.SeqLen); ds.Train.Len() < w {
		return nil, fmt.Errorf("corpus %s: %d training tokens, shorter than one window of %d (seqLen+1)", corpusName(s), ds.Train.Len(), w)
	}
	return ds, nil
}

func canonicalTokenizer(name string) string {
	if name == TokenizerR50k {
		return TokenizerGPT2
	}
	return name
}

func minWindow(seqLen int) int { return max(seqLen+1, 1) }

func corpusName(s Source) string {
	if s.Path == "" {
		return "(Go source tree)"
	}
	return s.Path
}

func loadTokenFile(s Source, tok Tokenizer) (*Dataset, error) {
	t, err := ReadTokenFile(s.Path)
	if err != nil {
		return nil, fmt.Errorf("data.path: %w", err)
	}
	if t.Vocab() > tok.VocabSize() {
		return nil, fmt.Errorf("token file %s: vocab size %d exceeds tokenizer %s's %d", s.Path, t.Vocab(), tok.Name(), tok.VocabSize())
	}
	train, val, err := splitTail(t, s.valFraction(), s.SeqLen)
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", s.Path, err)
	}
	return &Dataset{Train: train, Val: val, Tokenizer: tok.Name(), Files: 1}, nil
}

// splitTail holds out the last frac of the tokens, at least one window,
// leaving at least one window for training.
func splitTail(all Tokens, frac float64, seqLen int) (train, val Tokens, err error) {
	n := all.Len()
	if frac <= 0 {
		return all, all.Slice(0, 0), nil
	}
	w := minWindow(seqLen)
	v := max(int(math.Ceil(frac*float64(n))), w)
	if n-v < w {
		return Tokens{}, Tokens{}, fmt.Errorf("%d tokens are too few for one training and one validation window of %d tokens (seqLen+1) each; add text or turn the validation split off", n, w)
	}
	return all.Slice(0, n-v), all.Slice(n-v, n), nil
}

func loadText(ctx context.Context, s Source, tok Tokenizer, progress io.Writer) (*Dataset, error) {
	root, files, err := listFiles(ctx, s)
	if err != nil {
		return nil, err
	}
	key := cacheKey(s, root, files)
	trainPath := filepath.Join(s.CacheDir, key+".train.tok")
	valPath := filepath.Join(s.CacheDir, key+".val.tok")
	if ds, err := readCache(trainPath, valPath, tok); err == nil {
		ds.Files = len(files)
		return ds, nil
	}
	if err := os.MkdirAll(s.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("data.cacheDir: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(s.CacheDir, key+".lock"), progress)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have built the cache while this one waited.
	if ds, err := readCache(trainPath, valPath, tok); err == nil {
		ds.Files = len(files)
		return ds, nil
	} else if !errors.Is(err, fs.ErrNotExist) && progress != nil {
		fmt.Fprintf(progress, "token cache unusable, rebuilding: %v\n", err)
	}

	all, spans, err := tokenize(ctx, s, tok, files, progress)
	if err != nil {
		return nil, err
	}
	if all.Len() == 0 {
		return nil, fmt.Errorf("corpus %s: %d files matched but hold no text", root, len(files))
	}
	train, val, err := splitDocs(all, spans, s.valFraction(), s.SeqLen)
	if err != nil {
		return nil, fmt.Errorf("corpus %s: %w", root, err)
	}
	// Validation first: a cache without its training file is incomplete and
	// is rebuilt, so the training file is the commit point.
	if err := WriteTokenFile(valPath, val); err != nil {
		return nil, fmt.Errorf("write token cache: %w", err)
	}
	if err := WriteTokenFile(trainPath, train); err != nil {
		return nil, fmt.Errorf("write token cache: %w", err)
	}
	return &Dataset{Train: train, Val: val, Tokenizer: tok.Name(), Files: len(files), CachePath: trainPath, Tokenized: true}, nil
}

func readCache(trainPath, valPath string, tok Tokenizer) (*Dataset, error) {
	train, err := ReadTokenFile(trainPath)
	if err != nil {
		return nil, err
	}
	val, err := ReadTokenFile(valPath)
	if err != nil {
		return nil, err
	}
	if train.Vocab() != tok.VocabSize() || val.Vocab() != tok.VocabSize() {
		return nil, fmt.Errorf("token cache %s: vocab %d/%d, tokenizer %s has %d", trainPath, train.Vocab(), val.Vocab(), tok.Name(), tok.VocabSize())
	}
	return &Dataset{Train: train, Val: val, Tokenizer: tok.Name(), CachePath: trainPath}, nil
}

// splitDocs applies the per-document hash split, falling back to the tail
// split (see Load).
func splitDocs(all Tokens, spans []docSpan, frac float64, seqLen int) (train, val Tokens, err error) {
	if frac <= 0 {
		return all, all.Slice(0, 0), nil
	}
	nval := 0
	for _, sp := range spans {
		if sp.val {
			nval += sp.end - sp.start
		}
	}
	if nval < minWindow(seqLen) || nval == all.Len() {
		return splitTail(all, frac, seqLen)
	}
	w := all.width
	tb := make([]byte, 0, (all.Len()-nval)*w)
	vb := make([]byte, 0, nval*w)
	for _, sp := range spans {
		if sp.val {
			vb = append(vb, all.data[sp.start*w:sp.end*w]...)
		} else {
			tb = append(tb, all.data[sp.start*w:sp.end*w]...)
		}
	}
	return Tokens{data: tb, width: w, vocab: all.vocab}, Tokens{data: vb, width: w, vocab: all.vocab}, nil
}

// isVal hashes a document's key to a point in [0,1) and holds it out when the
// point falls below frac. FNV-1a alone is poorly mixed in its high bits for
// short similar keys, so a SplitMix64 finaliser follows.
func isVal(key string, frac float64) bool {
	h := fnv.New64a()
	h.Write([]byte(key))
	u := float64(mix64(h.Sum64())>>11) / (1 << 53)
	return u < frac
}

// cacheKey hashes everything that determines the tokens: format, tokenizer,
// kind, root, globs, text field, split, and each file's path, size and
// modification time.
func cacheKey(s Source, root string, files []corpusFile) string {
	h := sha256.New()
	fmt.Fprintf(h, "tern-data-cache %d\ntokenizer %s\nkind %s\nroot %s\ninclude %q\nexclude %q\ntextField %q\nval %v\nseqLen %d\n",
		cacheFormat, s.Tokenizer, s.Kind, root, s.Include, s.Exclude, s.TextField, s.valFraction(), s.SeqLen)
	for _, f := range files {
		fmt.Fprintf(h, "%q %d %d\n", f.rel, f.size, f.mtimeNs)
	}
	sum := h.Sum(nil)
	return s.Tokenizer + "-" + hex.EncodeToString(sum[:12])
}

// GoSourceRoot finds $GOROOT/src, the default corpus: it is on every machine
// that has Go. runtime.GOROOT is empty in binaries built with -trimpath, so
// the go command is asked first.
func GoSourceRoot(ctx context.Context) (string, error) {
	var tried []string
	try := func(goroot string) (string, bool) {
		if goroot == "" {
			return "", false
		}
		d := filepath.Join(goroot, "src")
		tried = append(tried, d)
		fi, err := os.Stat(d)
		return d, err == nil && fi.IsDir()
	}
	if d, ok := try(os.Getenv("GOROOT")); ok {
		return d, nil
	}
	if out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output(); err == nil {
		if d, ok := try(strings.TrimSpace(string(out))); ok {
			return d, nil
		}
	}
	//lint:ignore SA1019 deprecated, but the last resort when go is not on PATH
	if d, ok := try(runtime.GOROOT()); ok {
		return d, nil
	}
	return "", fmt.Errorf("data.path is empty and the Go source tree was not found (tried %q; is the go command on PATH?): set data.path", tried)
}

// listFiles returns the corpus root and its files sorted by relative path.
// Directories whose names start with '.' (.git, .cache) are skipped. A path
// that names a file selects that file whatever the globs say.
func listFiles(ctx context.Context, s Source) (string, []corpusFile, error) {
	root := s.Path
	if root == "" {
		r, err := GoSourceRoot(ctx)
		if err != nil {
			return "", nil, err
		}
		root = r
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", nil, fmt.Errorf("data.path %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", nil, fmt.Errorf("data.path: %w", err)
	}
	if !fi.IsDir() {
		return abs, []corpusFile{{abs: abs, rel: filepath.Base(abs), size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}}, nil
	}
	var files []corpusFile
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk corpus: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p != abs && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		r, err := filepath.Rel(abs, p)
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(r)
		if !matchAny(s.Include, rel) || matchAny(s.Exclude, rel) {
			return nil
		}
		info, err := os.Stat(p) // follows symlinks, unlike d.Info
		if err != nil {
			return fmt.Errorf("corpus file %s: %w", p, err)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		files = append(files, corpusFile{abs: p, rel: rel, size: info.Size(), mtimeNs: info.ModTime().UnixNano()})
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	if len(files) == 0 {
		return "", nil, fmt.Errorf("empty corpus: no files under %s match data.include %q (data.exclude %q)", abs, s.Include, s.Exclude)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return abs, files, nil
}

// document is one unit of text with the key that decides its split.
type document struct {
	key  string
	text []byte
}

// tokenize concatenates all documents' tokens in order. Batches are encoded
// with tensor.ParallelFor, one document per chunk, and appended in document
// order, so the stream does not depend on the number of cores.
func tokenize(ctx context.Context, s Source, tok Tokenizer, files []corpusFile, progress io.Writer) (Tokens, []docSpan, error) {
	var total int64
	for _, f := range files {
		total += f.size
	}
	bar := newProgressBar(progress, "tokenize "+tok.Name(), total)
	b := newTokenBuilder(tok.VocabSize())
	if _, ok := tok.(ByteTokenizer); ok {
		b.buf = make([]byte, 0, int(total)*b.width+len(files)*b.width)
	}
	sep := DocSeparator(tok)
	var spans []docSpan
	frac := s.valFraction()
	_, isByte := tok.(ByteTokenizer)
	var enc [][]int32
	consume := func(batch []document, nbytes int64) error {
		if !isByte {
			enc = append(enc[:0], make([][]int32, len(batch))...)
			tensor.ParallelFor(len(batch), 1, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					enc[i] = tok.Encode(string(batch[i].text))
				}
			})
		}
		for i, d := range batch {
			start := b.len()
			if isByte {
				b.appendBytes(d.text)
			} else if err := b.append(enc[i]); err != nil {
				return fmt.Errorf("tokenizer %s on %s: %w", tok.Name(), d.key, err)
			}
			if err := b.append(sep); err != nil {
				return fmt.Errorf("tokenizer %s separator: %w", tok.Name(), err)
			}
			spans = append(spans, docSpan{start: start, end: b.len(), val: frac > 0 && isVal(d.key, frac)})
		}
		bar.add(nbytes)
		return ctx.Err()
	}
	var err error
	if s.Kind == KindJSONL {
		err = readJSONL(files, s.TextField, consume)
	} else {
		err = readFiles(files, consume)
	}
	if err != nil {
		return Tokens{}, nil, err
	}
	bar.finish()
	return b.tokens(), spans, nil
}

func readFiles(files []corpusFile, consume func([]document, int64) error) error {
	var batch []document
	var n int64
	for _, f := range files {
		text, err := os.ReadFile(f.abs)
		if err != nil {
			return fmt.Errorf("read corpus file: %w", err)
		}
		batch = append(batch, document{key: f.rel, text: text})
		n += int64(len(text))
		if n >= batchBytes || len(batch) >= batchDocs {
			if err := consume(batch, n); err != nil {
				return err
			}
			batch, n = batch[:0], 0
		}
	}
	if len(batch) > 0 {
		return consume(batch, n)
	}
	return nil
}

// readJSONL reads one JSON object per line and takes the string field as a
// document. Blank lines are skipped; anything else that is not an object
// with that string field is an error naming the file and line.
func readJSONL(files []corpusFile, field string, consume func([]document, int64) error) error {
	var batch []document
	var n int64
	for _, f := range files {
		fh, err := os.Open(f.abs)
		if err != nil {
			return fmt.Errorf("read corpus file: %w", err)
		}
		r := bufio.NewReaderSize(fh, 1<<20)
		for lineNo := 1; ; lineNo++ {
			line, rerr := r.ReadBytes('\n')
			if rerr != nil && rerr != io.EOF {
				fh.Close()
				return fmt.Errorf("read corpus file %s: %w", f.abs, rerr)
			}
			n += int64(len(line))
			if t := bytes.TrimSpace(line); len(t) > 0 {
				text, err := jsonlText(t, field)
				if err != nil {
					fh.Close()
					return fmt.Errorf("%s:%d: %w", f.abs, lineNo, err)
				}
				batch = append(batch, document{key: fmt.Sprintf("%s:%d", f.rel, lineNo), text: text})
			}
			if n >= batchBytes || len(batch) >= batchDocs {
				if err := consume(batch, n); err != nil {
					fh.Close()
					return err
				}
				batch, n = batch[:0], 0
			}
			if rerr == io.EOF {
				break
			}
		}
		fh.Close()
	}
	if len(batch) > 0 || n > 0 {
		return consume(batch, n)
	}
	return nil
}

func jsonlText(line []byte, field string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return nil, fmt.Errorf("malformed JSON line (want an object with a %q string): %w", field, err)
	}
	raw, ok := obj[field]
	if !ok {
		return nil, fmt.Errorf("object has no %q field (set data.textField to the field that holds the text)", field)
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return nil, fmt.Errorf("field %q is not a string", field)
	}
	return []byte(text), nil
}
