package spec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// aliasBomb is the YAML "billion laughs": ten levels of nine aliases each,
// 9^9 strings if expanded.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString(`a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]` + "\n")
	prev := "a"
	for c := 'b'; c <= 'j'; c++ {
		refs := strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ",")
		fmt.Fprintf(&b, "%c: &%c [%s]\n", c, c, refs)
		prev = string(c)
	}
	return b.String()
}

// Inputs a user (or a broken client) may send to `ternctl apply` or the
// coordinator's ApplyJob: each is refused with an error that names what is
// wrong, without a panic and without time or memory growing beyond the
// input's size.
func TestBadInput(t *testing.T) {
	tooBig := minimal + "  data: {kind: text, text: \"" + strings.Repeat("x", MaxDocumentBytes) + "\"}\n"
	cases := []struct {
		name string
		doc  string
		sets []string
		want []string // substrings that must all appear in the error
	}{
		{"unclosed flow mapping", minimal + "  optimizer: {name: adamw\n", nil, []string{"parse YAML"}},
		{"tab indentation", "apiVersion: tern/v1\nspec:\n\tsteps: 3\n", nil, []string{"parse YAML", "line 3"}},
		{"not YAML at all", "\x00\x01\x02\xff\xfe", nil, []string{"parse YAML"}},
		{"a bare scalar", "42\n", nil, []string{"document must be a mapping", "got number 42"}},
		{"unknown top-level field", minimal + "replicas: 3\n", nil, []string{`replicas: unknown field "replicas" (allowed: apiVersion, kind, metadata, spec)`}},
		{"unknown deep field", minimal + "  optimizer: {name: galore, galore: {rnk: 4}}\n", nil, []string{`spec.optimizer.galore.rnk: unknown field "rnk"`, `did you mean "rank"?`}},
		{"unknown optimizer", minimal + "  optimizer: {name: sgd}\n", nil, []string{`spec.optimizer.name: "sgd" is not supported (allowed: adamw,`}},
		{"negative steps", minimal + "  steps: -5\n", nil, []string{"spec.steps: must be >= 1, got -5"}},
		{"steps beyond int64", minimal + "  steps: 99999999999999999999999\n", nil, []string{"spec.steps: must be an integer, got 1e+23"}},
		{"NaN learning rate", minimal + "  optimizer: {lr: .nan}\n", nil, []string{"spec.optimizer.lr: got NaN: numbers in a job spec must be finite"}},
		{"infinite learning rate", minimal + "  optimizer: {lr: .inf}\n", nil, []string{"spec.optimizer.lr: got +Inf: numbers in a job spec must be finite"}},
		{"infinity in a list", minimal + "  data: {kind: dir, include: [a, -.inf]}\n", nil, []string{"spec.data.include[1]: got -Inf: numbers in a job spec must be finite"}},
		{"no replicas", minimal + "  parallel: {data: 0}\n", nil, []string{"spec.parallel.data: 0 is out of range: between 1 and 256 replicas"}},
		{"too many replicas", minimal + "  parallel: {data: 100000}\n", nil, []string{"spec.parallel.data: 100000 is out of range: between 1 and 256"}},
		{"more stages than layers", minimal + "  parallel: {pipeline: 3}\n", nil, []string{"spec.parallel.pipeline: 3 stages for 2 layers: every stage needs at least one block, so at most 2"}},
		{"no stages", minimal + "  parallel: {pipeline: 0}\n", nil, []string{"spec.parallel.pipeline: 0 is out of range: at least 1 stage"}},
		{"layout over the worker limit", noModel + "  model: {preset: tiny, layers: 8}\n  parallel: {data: 64, pipeline: 8}\n", nil, []string{"spec.parallel.pipeline: data × pipeline = 512 workers, more than 256"}},
		{"unknown schedule", minimal + "  parallel: {pipeline: 2, schedule: zigzag}\n", nil, []string{`spec.parallel.schedule: "zigzag" is not supported`}},
		{"missing data path", minimal + "  data: {kind: jsonl}\n", nil, []string{"spec.data.path: required for kind jsonl: the file to read"}},
		{"duplicate key", minimal + "  steps: 1\n  steps: 2\n", nil, []string{"parse YAML", `"steps"`}},
		{"alias bomb", aliasBomb(), nil, []string{"parse YAML", "excessive aliasing"}},
		{"deep nesting", strings.Repeat("[", 100_000), nil, []string{"parse YAML", "max depth"}},
		{"deep nesting of mappings", strings.Repeat("{a: ", 100_000), nil, []string{"parse YAML"}},
		{"over the size limit", tooBig, nil, []string{fmt.Sprintf("the job spec is %d bytes, over the limit of %d bytes", len(tooBig), MaxDocumentBytes), "spec.data.path"}},
		{"set without a value", minimal, []string{"steps"}, []string{"--set steps: expected FIELD=VALUE"}},
		{"set of an unknown field", minimal, []string{"optimizer.nosuch=1"}, []string{`optimizer.nosuch`}},
		{"set of a bad value", minimal, []string{"steps=-1"}, []string{"spec.steps: must be >= 1, got -1 (from --set steps=-1)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Parse([]byte(c.doc), c.sets)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("Parse accepted:\n%.300s", c.doc)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%.2000v", w, err)
				}
			}
			// Decoding holds a few copies of the input (YAML tree, JSON,
			// generic tree); anything far beyond that means an expansion
			// (aliases, nesting) was not bounded. Allocation counts are
			// deterministic, unlike time.
			limit := uint64(64*len(c.doc)) + 64<<20
			if got := after.TotalAlloc - before.TotalAlloc; got > limit {
				t.Errorf("parsing %d bytes allocated %d bytes, more than %d", len(c.doc), got, limit)
			}
		})
	}
}

// Load refuses an oversized file without reading it whole, and says how
// large it is; a stream that never ends (a device, a pipe) is cut at the
// limit.
func TestLoadRefusesOversizedFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(minimal); err != nil {
		t.Fatal(err)
	}
	// A sparse file: 1 GiB long, nothing written.
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = Load(p, nil)
	runtime.ReadMemStats(&after)
	want := fmt.Sprintf("%s: the job spec is %d bytes, over the limit of %d bytes (1 MiB)", p, 1<<30, MaxDocumentBytes)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Load of a 1 GiB file: %v, want an error containing %q", err, want)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
		t.Errorf("refusing a 1 GiB file allocated %d bytes: it was read", got)
	}

	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero here")
	}
	_, err = Load("/dev/zero", nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the job spec is more than %d bytes", MaxDocumentBytes)) {
		t.Fatalf("Load of /dev/zero: %v", err)
	}

	// At the limit exactly, the document is read and checked as usual.
	at := minimal + "  data: {kind: text, text: \"\"}\n"
	pad := "#" + strings.Repeat("x", MaxDocumentBytes-len(at)-2) + "\n"
	p2 := filepath.Join(t.TempDir(), "at-limit.yaml")
	if err := os.WriteFile(p2, []byte(pad+at), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(p2, nil)
	var es Errors
	if !errors.As(err, &es) || !strings.Contains(err.Error(), "spec.data.text: required for kind text") {
		t.Fatalf("Load of a document at the limit: %v, want the field errors of its content", err)
	}
}
