package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// snapshotJob is a job of 4 ranks recovered twice: attempt 2 restored
// rank 2 from peers, attempt 3 (the current one) restored rank 0 from
// peers and the others from their local copies.
func snapshotJob() *ternv1.Job {
	j := &ternv1.Job{Name: "s", Phase: ternv1.JobPhase_JOB_PHASE_RUNNING, DataParallel: 2, PipelineParallel: 2, Steps: 100,
		CommittedStep: 47, Attempt: 3, SnapshotStep: 40,
		SpecJson: []byte(`{"apiVersion":"tern/v1","kind":"TrainingJob","metadata":{"name":"s"},"spec":{"steps":100,"snapshot":{"everySteps":1,"peerEverySteps":10,"tolerate":2}}}`)}
	for r, w := range []string{"worker-5", "worker-2", "worker-3", "worker-4"} {
		j.Ranks = append(j.Ranks, &ternv1.RankStatus{Rank: int32(r), Worker: w, Phase: ternv1.RankPhase_RANK_PHASE_RUNNING, Step: 47})
	}
	j.Restores = []*ternv1.RankRestore{
		{Attempt: 2, Rank: 0, Source: "local", Step: 20, RestoreMs: 3},
		{Attempt: 2, Rank: 2, Source: "peers", Step: 20, RestoreMs: 61},
		{Attempt: 3, Rank: 0, Source: "peers", Step: 40, RestoreMs: 88},
		{Attempt: 3, Rank: 1, Source: "local", Step: 40, RestoreMs: 2},
		{Attempt: 3, Rank: 3, Source: "local", Step: 40, RestoreMs: 4},
	}
	return j
}

func TestDescribeShowsSnapshots(t *testing.T) {
	var b strings.Builder
	if err := describeJob(&b, snapshotJob(), time.Now()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`(?m)^Snapshots:\s+local copy every 1 steps, peer fragments every 10 \(tolerate 2\)$`,
		`(?m)^Snapshot committed:\s+step 40 `,
		`(?m)^Last restore per rank:$`,
		`(?m)^  0\s+3\s+40\s+peers\s+88 ms\s+fragments held by other workers, decoded on worker-5$`,
		`(?m)^  1\s+3\s+40\s+local\s+2 ms\s+the in-memory copy on worker-2$`,
		// Rank 2 last restored in attempt 2, whose workers the status no longer shows.
		`(?m)^  2\s+2\s+20\s+peers\s+61 ms\s+fragments held by other workers, decoded on its worker$`,
		`(?m)^  3\s+3\s+40\s+local\s+4 ms\s+the in-memory copy on worker-4$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("describe output lacks %s:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "ms  "); n != 4 {
		t.Errorf("want one restore row per rank (4), got %d:\n%s", n, out)
	}
}

func TestDescribeWithoutSnapshots(t *testing.T) {
	j := snapshotJob()
	j.SnapshotStep, j.Restores = -1, nil
	j.SpecJson = []byte(`{"spec":{"snapshot":{"everySteps":0}}}`)
	var b strings.Builder
	if err := describeJob(&b, j, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !regexp.MustCompile(`(?m)^Snapshots:\s+off \(spec.snapshot.everySteps 0\)$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^Snapshot committed:\s+none yet$`).MatchString(out) || strings.Contains(out, "Last restore") {
		t.Errorf("describe of a job without snapshots:\n%s", out)
	}
}

func TestJobViewCarriesSnapshots(t *testing.T) {
	b, err := json.Marshal(newJobView(snapshotJob()))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		SnapshotStep *int64 `json:"snapshot_step"`
		Restores     []struct {
			Attempt   int32   `json:"attempt"`
			Rank      int32   `json:"rank"`
			Source    string  `json:"source"`
			Step      int64   `json:"step"`
			RestoreMS float64 `json:"restore_ms"`
			Worker    string  `json:"worker"`
			From      string  `json:"from"`
		} `json:"restores"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.SnapshotStep == nil || *v.SnapshotStep != 40 {
		t.Errorf("snapshot_step = %v, want 40", v.SnapshotStep)
	}
	if len(v.Restores) != 5 {
		t.Fatalf("restores: %d, want all 5: %s", len(v.Restores), b)
	}
	if r := v.Restores[2]; r.Attempt != 3 || r.Rank != 0 || r.Source != "peers" || r.Step != 40 || r.RestoreMS != 88 || r.Worker != "worker-5" {
		t.Errorf("restores[2] = %+v", r)
	}
	if r := v.Restores[1]; r.Worker != "" || !strings.Contains(r.From, "fragments") {
		t.Errorf("an earlier attempt's restore names no worker: %+v", r)
	}
	// None committed: null, not a misleading -1 or 0; no restores: [].
	j := snapshotJob()
	j.SnapshotStep, j.Restores = -1, nil
	b, _ = json.Marshal(newJobView(j))
	if !strings.Contains(string(b), `"snapshot_step":null`) || !strings.Contains(string(b), `"restores":[]`) {
		t.Errorf("json of a job with no snapshot: %s", b)
	}
}
