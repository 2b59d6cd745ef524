package coordinator_test

import (
	"context"
	"encoding/json"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// PlanJob answers with the plan `ternctl plan` computes locally for the
// same spec, and with whether the registered workers could take the job
// now; it stores nothing.
func TestPlanJob(t *testing.T) {
	c := startCluster(t, 2, 1)
	c.waitWorkers(2)
	ctx := context.Background()

	cases := []struct {
		name      string
		sets      []string
		ranks     int32
		placeable bool
	}{
		{"fits", []string{"parallel.data=2"}, 2, true},
		{"fits-exactly", []string{"parallel.data=3"}, 3, true},
		{"too-big", []string{"parallel.data=4"}, 4, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := tinySpec(t, "planned", tc.sets...)
			resp, err := c.client.PlanJob(ctx, &ternv1.PlanJobRequest{Spec: req.Spec, Set: req.Set})
			if err != nil {
				t.Fatal(err)
			}
			ts, err := spec.Parse(req.Spec, req.Set)
			if err != nil {
				t.Fatal(err)
			}
			want, err := train.Plan(ts)
			if err != nil {
				t.Fatal(err)
			}
			var got train.MemoryPlan
			if err := json.Unmarshal(resp.PlanJson, &got); err != nil {
				t.Fatal(err)
			}
			wantJSON, _ := json.Marshal(want)
			gotJSON, _ := json.Marshal(&got)
			if string(gotJSON) != string(wantJSON) {
				t.Fatalf("coordinator's plan differs from the local one:\n got %s\nwant %s", gotJSON, wantJSON)
			}
			if resp.TotalBytes != want.Total || resp.ExchangeSentBytes != want.ExchangeSent || resp.ExchangeRecvBytes != want.ExchangeRecv {
				t.Fatalf("summary fields %d/%d/%d, want %d/%d/%d", resp.TotalBytes, resp.ExchangeSentBytes, resp.ExchangeRecvBytes, want.Total, want.ExchangeSent, want.ExchangeRecv)
			}
			if resp.Ranks != tc.ranks || resp.Workers != 2 || resp.FreeSlots != 3 || resp.FreeSpareSlots != 0 {
				t.Fatalf("ranks %d, workers %d, free %d, spare %d; want %d ranks on 2 workers with 3 free slots", resp.Ranks, resp.Workers, resp.FreeSlots, resp.FreeSpareSlots, tc.ranks)
			}
			if resp.Placeable != tc.placeable || resp.Placement == "" {
				t.Fatalf("placeable %v (%q), want %v", resp.Placeable, resp.Placement, tc.placeable)
			}
			// Three ranks on workers of 2 and 1 slots: 2 ranks on one
			// worker, one other worker, so k = 1 with the default m = 1.
			if tc.ranks == 3 {
				code, st := snapshot.Code{K: 1, M: 1}, want.Weights+want.OptimizerState
				if resp.SnapshotCode != code.String() || resp.SnapshotLocalBytes != 2*code.LocalBytes(st) ||
					resp.SnapshotHeldBytes != code.HeldBytes(st, 2) || resp.SnapshotSendBytes != code.PeerSendBytes(st) || st <= 0 {
					t.Fatalf("snapshot lines %q local %d held %d send %d; want %v for a %d-byte state, 2 ranks per worker", resp.SnapshotCode,
						resp.SnapshotLocalBytes, resp.SnapshotHeldBytes, resp.SnapshotSendBytes, code, st)
				}
			}
			if !tc.placeable && resp.SnapshotCode != "" {
				t.Fatalf("snapshot lines for a job that cannot be placed: %q", resp.SnapshotCode)
			}
		})
	}
	jobs, err := c.client.ListJobs(ctx, &ternv1.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs.Jobs) != 0 {
		t.Fatalf("planning stored %d jobs", len(jobs.Jobs))
	}

	_, err = c.client.PlanJob(ctx, &ternv1.PlanJobRequest{Spec: []byte("kind: TrainingJob\nspec: {steps: -1}\n")})
	wantCode(t, err, codes.InvalidArgument, "job spec")
	_, err = c.client.PlanJob(ctx, &ternv1.PlanJobRequest{})
	wantCode(t, err, codes.InvalidArgument, "no job spec")
}
