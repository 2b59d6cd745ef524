package data

import (
	"strings"
	"testing"
)

func TestMatchGlob(t *testing.T) {
	cases := []struct {
		pat, rel string
		want     bool
	}{
		{"*.go", "a.go", true},
		{"*.go", "x/y/a.go", true},
		{"*.go", "x/y/a.txt", false},
		{"x/*.go", "x/a.go", true},
		{"x/*.go", "x/y/a.go", false},
		{"x/**/*.go", "x/a.go", true},
		{"x/**/*.go", "x/y/z/a.go", true},
		{"**/testdata/**", "a/testdata/b/c.go", true},
		{"**/testdata/**", "testdata/c.go", true},
		{"**/testdata/**", "a/testdatax/c.go", false},
		{"**", "anything/at/all", true},
		{"a/b", "a/b/c", false},
	}
	for _, c := range cases {
		if got := matchGlob(c.pat, c.rel); got != c.want {
			t.Errorf("matchGlob(%q, %q) = %v, want %v", c.pat, c.rel, got, c.want)
		}
	}
}

func TestSourceValidate(t *testing.T) {
	cases := []struct {
		s    Source
		want string // "" means valid
	}{
		{Source{}, ""},
		{Source{Kind: "dir", Path: "/x", Include: []string{"**/*.go"}, ValFraction: 0.1}, ""},
		{Source{Kind: "jsonl", Path: "a.jsonl", TextField: "body"}, ""},
		{Source{Kind: "tokens", Path: "a.tok", ValFraction: -1}, ""},
		{Source{Kind: "parquet"}, "data.kind: \"parquet\" is not a corpus kind (allowed: dir, tokens, jsonl)"},
		{Source{Kind: "tokens"}, "data.path: required for kind tokens"},
		{Source{Kind: "jsonl"}, "data.path: required for kind jsonl"},
		{Source{Kind: "tokens", Path: "a", Include: []string{"*"}}, "data.include/data.exclude: not allowed"},
		{Source{Tokenizer: "bert"}, "data.tokenizer: unknown tokenizer \"bert\" (allowed: byte, gpt2, r50k_base, cl100k_base)"},
		{Source{ValFraction: 0.9}, "data.valFraction: 0.9 out of range"},
		{Source{Include: []string{"[a-"}}, "data.include: glob \"[a-\""},
		{Source{Exclude: []string{""}}, "data.exclude: empty glob"},
		{Source{TextField: "t"}, "data.textField: only used by kind jsonl"},
	}
	for _, c := range cases {
		err := c.s.Validate()
		if c.want == "" {
			if err != nil {
				t.Errorf("%+v: unexpected error %v", c.s, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to contain %q", c.s, err, c.want)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	d := Source{}.WithDefaults()
	if d.Kind != KindDir || len(d.Include) != 1 || d.Include[0] != "*.go" || d.Tokenizer != "byte" ||
		d.ValFraction != DefaultValFraction || d.CacheDir == "" {
		t.Fatalf("defaults: %+v", d)
	}
	j := Source{Kind: KindJSONL, Path: "x"}.WithDefaults()
	if j.TextField != "text" || j.Include[0] != "*.jsonl" {
		t.Fatalf("jsonl defaults: %+v", j)
	}
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if got := DefaultCacheDir(); got != "/xdg/tern" {
		t.Fatalf("DefaultCacheDir with XDG_CACHE_HOME=/xdg: %s", got)
	}
}
