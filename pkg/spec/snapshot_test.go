package spec

import (
	"strings"
	"testing"
)

func TestSnapshotDefaults(t *testing.T) {
	job, err := Parse([]byte(minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.Spec.Snapshot != nil {
		t.Fatalf("absent section parsed as %+v", *job.Spec.Snapshot)
	}
	want := SnapshotSpec{EverySteps: 1, PeerEverySteps: 10, Tolerate: 1}
	if got := job.Spec.SnapshotSettings(); got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
	// A present section gets the tag defaults for the fields it leaves out.
	job, err = Parse([]byte(minimal+"  parallel: {data: 4}\n  snapshot: {tolerate: 2}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want.Tolerate = 2
	if got := job.Spec.SnapshotSettings(); got != want {
		t.Fatalf("partial section %+v, want %+v", got, want)
	}
	// The explicit default section and no section describe the same job
	// but encode differently; both must validate.
	if err := job.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotValidation(t *testing.T) {
	cases := []struct {
		name, doc string
		want      string // "" for a valid job
	}{
		{"one rank ignores the peer layer", "  snapshot: {tolerate: 3}\n", ""},
		{"four ranks tolerate 3", "  parallel: {data: 4}\n  snapshot: {tolerate: 3}\n", ""},
		{"four ranks k 2 m 2", "  parallel: {data: 2, pipeline: 2}\n  snapshot: {tolerate: 2, dataShards: 2}\n", ""},
		{"local copy only", "  parallel: {data: 2}\n  snapshot: {peerEverySteps: 0, tolerate: 5}\n", ""},
		{"tolerate beyond world", "  parallel: {data: 4}\n  snapshot: {tolerate: 4}\n",
			"spec.snapshot.tolerate: tolerate 4 needs at least 4 other workers per rank, but there are 3 (a job of 4 ranks): use tolerate <= 3, or more ranks"},
		{"too many data shards", "  parallel: {data: 4}\n  snapshot: {tolerate: 2, dataShards: 3}\n",
			"spec.snapshot.dataShards: dataShards 3 with tolerate 2 sends 4 fragments to distinct other workers, but there are 3: use dataShards <= 2"},
		{"tolerate zero", "  snapshot: {tolerate: 0}\n", "spec.snapshot.tolerate: must be between 1 and 8, got 0"},
		{"data shards range", "  snapshot: {dataShards: 40}\n", "spec.snapshot.dataShards: must be between 1 and 32"},
		{"negative cadence", "  snapshot: {everySteps: -1}\n", "spec.snapshot.everySteps: must be >= 0, got -1"},
		{"peer cadence not a multiple", "  snapshot: {everySteps: 4, peerEverySteps: 10}\n",
			"spec.snapshot.peerEverySteps: 10 is not a multiple of everySteps (4): peers get fragments of a staged copy; use 8 or 12"},
		{"peer without local", "  snapshot: {everySteps: 0}\n", "spec.snapshot.peerEverySteps: 10 needs a staged local copy to split, but everySteps is 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal+c.doc), nil)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("accepted, want %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error\n%v\ndoes not contain\n%s", err, c.want)
			}
		})
	}
}

func TestSnapshotExplain(t *testing.T) {
	out, err := Explain("snapshot.tolerate")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"spec.snapshot.tolerate <integer>", "DEFAULT:  1", "workers may be lost at once"} {
		if !strings.Contains(out, w) {
			t.Errorf("explain snapshot.tolerate lacks %q:\n%s", w, out)
		}
	}
	out, err = Explain("snapshot")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"everySteps", "peerEverySteps", "dataShards"} {
		if !strings.Contains(out, w) {
			t.Errorf("explain snapshot lacks %q:\n%s", w, out)
		}
	}
}
