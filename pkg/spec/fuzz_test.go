package spec

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCanonicalRoundTrip checks the property the control plane relies on:
// the coordinator stores a job as its canonical JSON and parses it again
// when it restores the job, and every worker parses the same bytes for its
// rank. So whatever Parse accepts must encode canonically, and parsing that
// encoding must give the same job, encoded the same. Whatever Parse refuses
// must be refused with an error, never a panic. The seeds (the examples,
// and the hostile inputs of TestBadInput) run in every `go test`.
func FuzzCanonicalRoundTrip(f *testing.F) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	sub, _ := filepath.Glob("../../examples/*/*.yaml")
	for _, p := range append(files, sub...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
	}
	f.Add([]byte(goodDoc), "parallel.data=4")
	f.Add([]byte(minimal), "optimizer.name=demo")
	f.Add([]byte(minimal+"  parallel: {pipeline: 2, vocabParallel: true}\n"), "batch.microBatches=4")
	f.Add([]byte(minimal+"  data: {kind: text, text: \"héllo\\u0000\"}\n"), "data.valFraction=0")
	f.Add([]byte(aliasBomb()), "")
	f.Add([]byte(strings.Repeat("[", 1000)), "")
	f.Add([]byte("{\"apiVersion\": \"tern/v1\", \"kind\": \"TrainingJob\", \"metadata\": {\"name\": \"j\"}, \"spec\": {\"model\": {\"preset\": \"tiny\"}, \"steps\": 1e3}}"), "seed=18446744073709551615")
	f.Fuzz(func(t *testing.T, doc []byte, set string) {
		var sets []string
		if set != "" {
			sets = []string{set}
		}
		j, err := Parse(doc, sets)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused with an empty error message")
			}
			return
		}
		js := j.CanonicalJSON()
		if js == nil {
			t.Fatal("accepted job has no canonical encoding")
		}
		again, err := Parse(js, nil)
		if err != nil {
			t.Fatalf("the canonical encoding of an accepted job is refused: %v\n%s", err, js)
		}
		if js2 := again.CanonicalJSON(); !bytes.Equal(js, js2) {
			t.Fatalf("canonical encoding changes on a round trip:\n%s\n%s", js, js2)
		}
	})
}
