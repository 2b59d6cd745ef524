package data

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Corpus kinds accepted in Source.Kind.
const (
	KindDir    = "dir"    // a tree of text files; each file is one document
	KindTokens = "tokens" // one pre-tokenised file in the token file format
	KindJSONL  = "jsonl"  // JSON lines; each line's text field is one document
)

// DefaultValFraction is the share of documents (or, in the fallback, of
// tokens) held out for validation when Source.ValFraction is 0. On the Go
// source tree it holds out ~77 files, ~1 MB: enough for a stable eval loss,
// little enough not to starve training.
const DefaultValFraction = 0.01

// maxValFraction bounds the split: holding out more than half the corpus is
// almost certainly a typo.
const maxValFraction = 0.5

// Source describes a training corpus. It is the data section of a job spec,
// e.g. `data: {kind: dir, path: /usr/local/go/src, include: ["*.go"], tokenizer: byte}`.
// Zero fields take the defaults described on each field (see WithDefaults).
type Source struct {
	Kind        string   `json:"kind,omitempty"`        // dir (default), tokens or jsonl
	Path        string   `json:"path,omitempty"`        // dir: root directory or one file (empty: $(go env GOROOT)/src); tokens: a token file; jsonl: a file or a directory of them
	Include     []string `json:"include,omitempty"`     // globs a file must match (dir default ["*.go"], jsonl default ["*.jsonl"]); no '/' matches the base name, else the slash-separated relative path with ** for any number of directories
	Exclude     []string `json:"exclude,omitempty"`     // globs, same syntax as include, that drop a file even if it is included
	Tokenizer   string   `json:"tokenizer,omitempty"`   // byte (default), gpt2, r50k_base or cl100k_base
	TextField   string   `json:"textField,omitempty"`   // jsonl: the string field that holds a document (default "text")
	ValFraction float64  `json:"valFraction,omitempty"` // share held out for validation, at most 0.5; 0 means 0.01; negative means no validation split
	CacheDir    string   `json:"cacheDir,omitempty"`    // where tokenised corpora are cached (default $XDG_CACHE_HOME/tern, else ~/.cache/tern)

	// SeqLen is the model's context length, filled in by the caller (it lives
	// in the model section). When set, Load makes sure train and validation
	// each hold at least one window of SeqLen+1 tokens.
	SeqLen int `json:"-"`
}

// WithDefaults returns s with every unset field given its default. It does
// no I/O except to find the user's cache directory.
func (s Source) WithDefaults() Source {
	if s.Kind == "" {
		s.Kind = KindDir
	}
	if len(s.Include) == 0 {
		switch s.Kind {
		case KindDir:
			s.Include = []string{"*.go"}
		case KindJSONL:
			s.Include = []string{"*.jsonl"}
		}
	}
	if s.Tokenizer == "" {
		s.Tokenizer = TokenizerByte
	}
	if s.TextField == "" && s.Kind == KindJSONL {
		s.TextField = "text"
	}
	if s.ValFraction == 0 {
		s.ValFraction = DefaultValFraction
	}
	if s.CacheDir == "" {
		s.CacheDir = DefaultCacheDir()
	}
	return s
}

// valFraction is the effective split: 0 when disabled.
func (s Source) valFraction() float64 { return max(s.ValFraction, 0) }

// DefaultCacheDir is $XDG_CACHE_HOME/tern, else ~/.cache/tern (or the
// platform's user cache directory), else a directory under the system temp.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil && d != "" {
		return filepath.Join(d, "tern")
	}
	return filepath.Join(os.TempDir(), "tern-cache")
}

// Validate checks the fields without touching the file system, so the
// coordinator can reject a bad spec even when the corpus lives only on the
// workers. Errors name the spec field and the allowed values.
func (s Source) Validate() error {
	var errs []error
	switch s.Kind {
	case "", KindDir, KindJSONL:
	case KindTokens:
		if s.Path == "" {
			errs = append(errs, errors.New("data.path: required for kind tokens (a token file)"))
		}
		if len(s.Include) > 0 || len(s.Exclude) > 0 {
			errs = append(errs, errors.New("data.include/data.exclude: not allowed for kind tokens (it reads one file)"))
		}
	default:
		errs = append(errs, fmt.Errorf("data.kind: %q is not a corpus kind (allowed: %s, %s, %s)", s.Kind, KindDir, KindTokens, KindJSONL))
	}
	if s.Kind == KindJSONL && s.Path == "" {
		errs = append(errs, errors.New("data.path: required for kind jsonl (a .jsonl file or a directory of them)"))
	}
	if s.Tokenizer != "" && !slices.Contains(TokenizerNames(), s.Tokenizer) {
		errs = append(errs, fmt.Errorf("data.tokenizer: unknown tokenizer %q (allowed: %s)", s.Tokenizer, strings.Join(TokenizerNames(), ", ")))
	}
	if math.IsNaN(s.ValFraction) || s.ValFraction > maxValFraction {
		errs = append(errs, fmt.Errorf("data.valFraction: %v out of range (allowed: 0 < f <= %v; 0 means %v; negative disables validation)", s.ValFraction, maxValFraction, DefaultValFraction))
	}
	for _, g := range s.Include {
		if err := checkGlob(g); err != nil {
			errs = append(errs, fmt.Errorf("data.include: %w", err))
		}
	}
	for _, g := range s.Exclude {
		if err := checkGlob(g); err != nil {
			errs = append(errs, fmt.Errorf("data.exclude: %w", err))
		}
	}
	if s.TextField != "" && s.Kind != KindJSONL {
		errs = append(errs, fmt.Errorf("data.textField: only used by kind jsonl, not %q", s.Kind))
	}
	if s.SeqLen < 0 {
		errs = append(errs, fmt.Errorf("sequence length %d must be >= 0", s.SeqLen))
	}
	return errors.Join(errs...)
}

func checkGlob(g string) error {
	if g == "" {
		return errors.New("empty glob")
	}
	for _, seg := range strings.Split(g, "/") {
		if seg == "**" {
			continue
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("glob %q: %w (syntax: https://pkg.go.dev/path#Match, plus ** for any number of directories)", g, err)
		}
	}
	return nil
}

// matchGlob matches a glob against a slash-separated relative path. A
// pattern without '/' matches the base name, so "*.go" selects Go files at
// any depth; a pattern with '/' matches the whole relative path segment by
// segment, and a "**" segment matches zero or more directories.
func matchGlob(pattern, rel string) bool {
	if !strings.Contains(pattern, "/") {
		ok, _ := path.Match(pattern, path.Base(rel))
		return ok
	}
	return matchSegments(strings.Split(pattern, "/"), strings.Split(rel, "/"))
}

func matchSegments(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(segs); i++ {
				if matchSegments(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], segs[0]); !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

func matchAny(globs []string, rel string) bool {
	for _, g := range globs {
		if matchGlob(g, rel) {
			return true
		}
	}
	return false
}
