package coordinator_test

import (
	"context"
	"encoding/json"
	"testing"

	"google.golang.org/grpc/codes"

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
