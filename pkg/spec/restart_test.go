package spec

import (
	"strings"
	"testing"
)

func TestRestartPolicy(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      int
	}{
		{"absent", minimal, DefaultMaxRestarts},
		{"empty section", minimal + "  restartPolicy: {}\n", DefaultMaxRestarts},
		{"explicit zero", minimal + "  restartPolicy: {maxRestarts: 0}\n", 0},
		{"explicit", minimal + "  restartPolicy: {maxRestarts: 7}\n", 7},
	} {
		j, err := Parse([]byte(c.doc), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := j.Spec.RestartSettings().MaxRestarts; got != c.want {
			t.Errorf("%s: maxRestarts %d, want %d", c.name, got, c.want)
		}
	}
	// Absent, the section stays out of the canonical form, so a job
	// applied before the section existed is still the same job.
	j, err := Parse([]byte(minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(j.CanonicalJSON()), "restartPolicy") {
		t.Errorf("canonical JSON of a job without restartPolicy mentions it: %s", j.CanonicalJSON())
	}
	for _, bad := range []string{"-1", "10001"} {
		_, err := Parse([]byte(minimal+"  restartPolicy: {maxRestarts: "+bad+"}\n"), nil)
		if err == nil || !strings.Contains(err.Error(), "spec.restartPolicy.maxRestarts: "+bad+" is out of range: allowed 0 to 10000") {
			t.Errorf("maxRestarts %s: got %v", bad, err)
		}
	}
	for _, c := range []struct{ doc, want string }{
		{"{shrink: true}", "spec.restartPolicy.shrink: needs spec.checkpoint.dir"},
		{"{shrinkTimeoutSeconds: 30}", "spec.restartPolicy.shrinkTimeoutSeconds: applies only with spec.restartPolicy.shrink: true"},
		{"{minData: 1}", "spec.restartPolicy.minData: applies only with spec.restartPolicy.shrink: true"},
		{"{shrink: true, shrinkTimeoutSeconds: 3601}", "spec.restartPolicy.shrinkTimeoutSeconds: 3601 is out of range: allowed 1 to 3600"},
		{"{shrink: true, minData: 2}", "spec.restartPolicy.minData: 2 is out of range: allowed 1 to spec.parallel.data (1)"},
		{"{shrink: true, minData: -1}", "spec.restartPolicy.minData: -1 is out of range"},
	} {
		_, err := Parse([]byte(minimal+"  restartPolicy: "+c.doc+"\n"), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("restartPolicy %s: got %v, want an error containing %q", c.doc, err, c.want)
		}
	}
	if _, err := Parse([]byte(minimal+"  restartPolicy: {maxRestart: 2}\n"), nil); err == nil || !strings.Contains(err.Error(), "spec.restartPolicy.maxRestart: unknown field") {
		t.Errorf("misspelt field: got %v", err)
	}
}
